"""Notify's REST API: what was sent about a ticket; agents' contact details; customers' preferences.

The list of deliveries leaves recipients' addresses and message bodies out: the ticket in intake
already names the customer, and status questions ("did the acknowledgement go out?") need neither.
"""

from collections.abc import Collection
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict

from services.notify.domain import PHONE_PATTERN, DeliveryChannel, DeliveryState, RecipientRole
from services.notify.planner import AgentContact, Preferences
from services.notify.repository import NotifyTransaction
from shared.http import BODY, KEYED, problem_answers
from shared.outbound import HostUnresolved, OutboundPolicy, OutboundRefused

Id = Annotated[str, Path(min_length=1, max_length=100)]


class NotificationView(BaseModel):
    id: str
    kind: str
    channel: DeliveryChannel
    state: DeliveryState
    attempts: int
    message_id: str
    sent_at: datetime | None
    last_error: str | None
    recipient_role: RecipientRole
    recipient_id: str | None
    locale: str
    due_at: datetime
    reason: str | None


def _address(field: str, channel: str, **schema) -> dict:
    return {"properties": {"channel": {"const": channel}, field: {"type": "string", **schema}}, "required": [field]}


class ContactDetails(AgentContact):
    """An agent's contact as `PUT` takes it: the chosen channel's address is needed (email is the default)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                _address("email", "email", format="email"),
                {**_address("webhook_url", "webhook", pattern="^https?://"), "required": ["channel", "webhook_url"]},
                {**_address("phone", "sms", pattern=PHONE_PATTERN), "required": ["channel", "phone"]},
            ]
        }
    )


def _only(schema: dict, fields: Collection[str], values: list[str]) -> None:
    """`fields`, lists of strings, take only `values`."""
    for field in fields:
        schema["properties"][field]["items"]["enum"] = values


class TicketNotifications(BaseModel):
    ticket_id: str
    notifications: list[NotificationView]


def build_routes(
    store: NotifyTransaction, require_api_key, needs, kinds: Collection[str], outbound: OutboundPolicy
) -> APIRouter:
    """`store`: notify's repositories outside any transaction (`UnitOfWork.reads`): each route reads or
    writes one document. `kinds` are the rules' kinds: the only ones a customer can opt out of or in to;
    `outbound` judges agents' webhook URLs."""
    routes = APIRouter(
        prefix="/v1", tags=["notifications"], dependencies=[Depends(require_api_key)], responses=problem_answers(*KEYED)
    )

    class WantedPreferences(Preferences):
        """Preferences as `PUT` takes them: the schema lists the rules' kinds, which the handler checks."""

        model_config = ConfigDict(json_schema_extra=lambda schema: _only(schema, ("opt_out", "opt_in"), sorted(kinds)))

    read, write, agents = [needs("tickets:read")], [needs("tickets:write")], [needs("agents")]
    deliveries, contacts, preferences = store.deliveries, store.contacts, store.preferences

    @routes.get(
        "/notifications", response_model=TicketNotifications, dependencies=read, responses=problem_answers(422)
    )
    async def list_notifications(
        ticket_id: Annotated[str, Query(min_length=1, max_length=200)],
    ) -> TicketNotifications:
        found = await deliveries.for_ticket(ticket_id)
        return TicketNotifications(
            ticket_id=ticket_id,
            notifications=[
                NotificationView.model_validate({**delivery.model_dump(), "due_at": delivery.next_attempt_at})
                for delivery in found
            ],
        )

    @routes.put(
        "/agents/{agent_id}/contact",
        response_model=AgentContact,
        dependencies=agents,
        responses=problem_answers(
            *BODY, reasons={422: "malformed input; or a webhook URL whose host does not resolve, or is internal"}
        ),
    )
    async def put_contact(agent_id: Id, contact: ContactDetails) -> AgentContact:
        """How notify reaches this agent: `channel` (email, webhook, sms) and its address. A webhook URL
        that reaches an internal address is refused unless OUTBOUND_URL_ALLOWLIST permits it."""
        if contact.webhook_url:
            try:
                await outbound.destination(str(contact.webhook_url), "webhook_url")
            except (OutboundRefused, HostUnresolved) as refused:
                raise HTTPException(422, str(refused)) from refused
        await contacts.put(agent_id, contact)
        return contact

    @routes.get(
        "/agents/{agent_id}/contact",
        response_model=AgentContact,
        dependencies=agents,
        responses=problem_answers(422, reasons={404: "no contact details for the agent"}),
    )
    async def get_contact(agent_id: Id) -> AgentContact:
        found = await contacts.get(agent_id)
        if found is None:
            raise HTTPException(404, f"no contact details for agent {agent_id}")
        return found

    @routes.put(
        "/customers/{customer_id}/preferences",
        response_model=Preferences,
        dependencies=write,
        responses=problem_answers(*BODY),
    )
    async def put_preferences(customer_id: Id, wanted: WantedPreferences) -> Preferences:
        """Kinds opted out of (transactional ones are sent anyway) or in to, quiet hours, language."""
        if unknown := sorted((set(wanted.opt_out) | set(wanted.opt_in)) - set(kinds)):
            # A misspelt kind would otherwise be stored and silently change nothing.
            raise HTTPException(422, f"unknown kinds: {', '.join(unknown)}; known: {', '.join(sorted(kinds))}")
        await preferences.put(customer_id, wanted)
        return wanted

    @routes.get(
        "/customers/{customer_id}/preferences",
        response_model=Preferences,
        dependencies=read,
        responses=problem_answers(422),
    )
    async def get_preferences(customer_id: Id) -> Preferences:
        return await preferences.get(customer_id) or Preferences()

    return routes

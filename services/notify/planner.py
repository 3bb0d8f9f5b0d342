"""Deciding what one rule owes for one event: pure, so every choice is tested without I/O.

The service layer loads what notify knows (the ticket, the agent's contact, the customer's
preferences) and asks `plan` for each audience of each matching rule; the answer is a delivery,
pending (due now, later, or held for quiet hours or the SLA) or suppressed with a reason.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from services.notify.domain import (
    DIGEST_KIND,
    Delivery,
    DeliveryChannel,
    DeliveryState,
    QuietHours,
    RecipientRole,
    Render,
    address_problem,
    csat_links,
    delivery_key,
    describe_duration,
    describe_instant,
    locale_of,
    message_id_for,
    nps_links,
    quiet_hours_end,
    survey_id_for,
)
from services.notify.rules import Audience, Rule
from shared.clock import from_ms
from shared.envelope import Envelope
from shared.events import SlaBreached, SlaWarning, TicketAssigned, TicketMessageAdded, TicketSolved
from shared.signing import MESSAGE_ID_DOMAIN


class TicketView(BaseModel):
    """What notify keeps about a ticket, from the events it consumed."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    subject: str = ""
    priority: str = "normal"
    customer_id: str | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    language: str | None = None
    timezone: str | None = None
    assignee_id: str | None = None
    first_reply_due_ms: int | None = None
    first_reply_target_seconds: int | None = None
    held: tuple[str, ...] = ()
    """Deliveries held until one of this ticket's SLA clocks starts (`Rule.wait_for_sla`), by id, so the clock's
    event finds them by `_id` in its batch's prefetch, not with a query of its own. A view stored before
    notify kept this lists none: what it held then goes out at the hold's timeout, without the reply time."""


class AgentContact(BaseModel):
    """How an agent wants to hear from notify: `PUT /v1/agents/{id}/contact`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: DeliveryChannel = DeliveryChannel.EMAIL
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    webhook_url: HttpUrl | None = None
    phone: str | None = Field(default=None, max_length=20, description="E.164, e.g. `+4930123456`.")
    language: str | None = Field(default=None, max_length=35)

    @model_validator(mode="after")
    def _reachable(self) -> "AgentContact":
        problem = address_problem(self.channel, self.address)
        if problem:
            raise ValueError(f"channel {self.channel}: {problem}")
        return self

    @property
    def address(self) -> str | None:
        return {
            DeliveryChannel.EMAIL: self.email,
            DeliveryChannel.WEBHOOK: str(self.webhook_url) if self.webhook_url else None,
            DeliveryChannel.SMS: self.phone,
        }[self.channel]


class Preferences(BaseModel):
    """A customer's choices: `PUT /v1/customers/{id}/preferences`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opt_out: list[str] = Field(default_factory=list, max_length=50, description="Kinds not to send (transactional ones are sent anyway).")
    opt_in: list[str] = Field(default_factory=list, max_length=50, description="Opt-in kinds wanted, e.g. `follow_up`.")
    quiet_hours: QuietHours | None = None
    language: str | None = Field(default=None, max_length=35, description="Overrides the ticket's language.")


@dataclass(frozen=True)
class Recipient:
    role: RecipientRole
    channel: DeliveryChannel
    address: str | None
    id: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    problem: str | None = None
    """Why nobody can be reached, when that is so (no contact details, an unknown ticket)."""


@dataclass(frozen=True)
class PlanConfig:
    intake_public_url: str = "http://127.0.0.1:8001"
    csat_signing_key: str = ""
    csat_link_ttl: timedelta = timedelta(days=14)
    survey_kinds: frozenset[str] = frozenset()
    """Kinds whose templates show signed links (`csat_links`, `nps_links`): without a signing key they cannot be sent."""
    nps_kinds: frozenset[str] = frozenset()
    """Kinds whose templates show `nps_links`: each delivery of one carries a survey of its own."""
    team_webhook_url: str = ""
    supervisors_webhook_url: str = ""
    max_event_age: timedelta = timedelta(days=3)
    """Older events owe nothing but a visible suppression: a new consumer reading a topic from its
    beginning must not tell agents about last month's assignments."""


def thread_root(ticket_id: str) -> str:
    """Every mail about a ticket refers to this id, so mail clients and intake thread them together."""
    return f"<{ticket_id}@{MESSAGE_ID_DOMAIN}>"


def resolve(
    audience: Audience,
    event: Envelope,
    ticket: TicketView | None,
    *,
    contacts: dict[str, AgentContact],
    preferences: Preferences | None,
    config: PlanConfig,
) -> Recipient:
    """Who the audience is for this event, and where to reach them."""
    if audience is Audience.CUSTOMER:
        if ticket is None:
            return Recipient(RecipientRole.CUSTOMER, DeliveryChannel.EMAIL, None, problem="ticket unknown to notify")
        return Recipient(
            RecipientRole.CUSTOMER,
            DeliveryChannel.EMAIL,
            ticket.customer_email,
            id=ticket.customer_id,
            name=ticket.customer_name,
            locale=locale_of(preferences.language if preferences else None, ticket.language),
            timezone=(preferences.quiet_hours.timezone if preferences and preferences.quiet_hours else None)
            or ticket.timezone,
            problem=None if ticket.customer_email else "the customer has no email address",
        )
    if audience in (Audience.AGENT, Audience.ASSIGNEE):
        agent_id = getattr(event.data, "agent_id", None) if audience is Audience.AGENT else (
            ticket.assignee_id if ticket else None
        )
        if agent_id is None:
            return Recipient(RecipientRole.AGENT, DeliveryChannel.EMAIL, None, problem="the ticket has no assignee")
        contact = contacts.get(agent_id)
        if contact is None:
            return Recipient(
                RecipientRole.AGENT, DeliveryChannel.EMAIL, None, id=agent_id,
                problem=f"no contact details for agent {agent_id}",
            )
        return Recipient(
            RecipientRole.AGENT, contact.channel, contact.address, id=agent_id, name=contact.name,
            locale=contact.language,
        )
    role = RecipientRole(audience.value)
    url = config.team_webhook_url if audience is Audience.TEAM else config.supervisors_webhook_url
    setting = "TEAM_WEBHOOK_URL" if audience is Audience.TEAM else "SUPERVISORS_WEBHOOK_URL"
    return Recipient(role, DeliveryChannel.WEBHOOK, url or None, problem=None if url else f"{setting} is not set")


def plan(
    rule: Rule,
    recipient: Recipient,
    event: Envelope,
    ticket: TicketView | None,
    preferences: Preferences | None,
    *,
    render: Render,
    now: datetime,
    config: PlanConfig,
) -> Delivery:
    """The delivery `rule` owes `recipient` for `event`: pending, held, or suppressed with the reason."""
    key = delivery_key(event.id, recipient.role, rule.kind)
    due = now + timedelta(seconds=rule.delay_seconds)
    ticket_id = ticket.ticket_id if ticket else getattr(event.data, "ticket_id", event.subject)
    base = {
        "id": key,
        "ticket_id": ticket_id,
        "kind": rule.kind,
        "channel": recipient.channel,
        "recipient": recipient.address or "",
        "recipient_role": recipient.role,
        "recipient_id": recipient.id,
        "locale": locale_of(recipient.locale),
        "subject": "",
        "text": "",
        "html": "",
        "message_id": message_id_for(key),
        "in_reply_to": thread_root(ticket_id),
        "correlation_id": event.correlationid,
        "causation_id": str(event.id),
        "next_attempt_at": due,
        "created_at": now,
        "urgent": rule.urgent,
    }
    problem = suppression(rule, recipient, preferences, config)
    if problem is None and now - event.time > config.max_event_age:
        problem = f"the event is older than {describe_duration(config.max_event_age.total_seconds())}"
    if problem is not None:
        return Delivery(**base, state=DeliveryState.SUPPRESSED, reason=problem)
    context = build_context(rule, event, ticket, recipient, config, due, key)
    held_reason = None
    awaiting = None
    if rule.wait_for_sla and ticket is not None and ticket.first_reply_due_ms is None:
        awaiting = f"sla:{rule.wait_for_sla}"
        due = now + timedelta(seconds=rule.wait_for_sla_seconds)
        held_reason = f"waiting up to {rule.wait_for_sla_seconds:g}s for the {rule.wait_for_sla} SLA clock"
    if not rule.urgent and preferences and preferences.quiet_hours and recipient.role is RecipientRole.CUSTOMER:
        if (quiet_end := quiet_hours_end(due, preferences.quiet_hours)) is not None:
            due = quiet_end
            held_reason = f"quiet hours until {quiet_end.isoformat()}"
    rendered = render(rule.kind, base["locale"], context)
    return Delivery(
        **{
            **base,
            "next_attempt_at": due,
            "scheduled_for": due if awaiting is None else now,
            "locale": rendered.locale,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
        },
        reason=held_reason,
        awaiting=awaiting,
        context=context,
    )


def suppression(rule: Rule, recipient: Recipient, preferences: Preferences | None, config: PlanConfig) -> str | None:
    if recipient.problem:
        return recipient.problem
    if problem := address_problem(recipient.channel, recipient.address):
        return problem
    if recipient.role is RecipientRole.CUSTOMER:
        if rule.opt_in and (preferences is None or rule.kind not in preferences.opt_in):
            return f"the customer has not opted in to {rule.kind}"
        if not rule.transactional and preferences is not None and rule.kind in preferences.opt_out:
            return f"the customer opted out of {rule.kind}"
    if rule.kind in config.survey_kinds and not config.csat_signing_key:
        return "CSAT_SIGNING_KEY is not set: the survey link cannot be signed"
    if rule.kind in config.nps_kinds and not recipient.id:
        return "the customer has no id: an NPS survey link is under the customer"
    return None


def build_context(
    rule: Rule,
    event: Envelope,
    ticket: TicketView | None,
    recipient: Recipient,
    config: PlanConfig,
    due: datetime,
    key: str,
) -> dict:
    """Everything a template may use; JSON-able, so it is stored with the delivery and can render again."""
    data = event.data
    context: dict = {
        "kind": rule.kind,
        "ticket_id": ticket.ticket_id if ticket else getattr(data, "ticket_id", event.subject),
        "subject": ticket.subject if ticket else "",
        "priority": ticket.priority if ticket else "normal",
        "customer_name": ticket.customer_name if ticket else None,
        "recipient_name": recipient.name,
        "timezone": recipient.timezone,
        "event": data.model_dump(mode="json"),
        "body": data.body if isinstance(data, TicketMessageAdded) else None,
        "agent_id": getattr(data, "agent_id", None) or (ticket.assignee_id if ticket else None),
        "first_reply_within": None,
        "first_reply_within_seconds": None,
        "first_reply_due": None,
        "csat_links": None,
        "csat_expires": None,
        "nps_links": None,
        "nps_expires": None,
        "survey_id": None,
        "metric": getattr(data, "metric", None),
        "due_at": None,
        "remaining": None,
        "reason": None,
    }
    if ticket is not None and ticket.first_reply_due_ms is not None:
        set_first_reply(context, ticket, recipient.timezone)
    if isinstance(data, (SlaWarning, SlaBreached)):
        context["due_at"] = describe_instant(data.due_at, recipient.timezone)
        if isinstance(data, SlaWarning):
            context["remaining"] = describe_duration(data.remaining_seconds)
    if isinstance(data, TicketAssigned):
        context["reason"] = data.reason
    if isinstance(data, TicketSolved) and config.csat_signing_key:
        expires = due + config.csat_link_ttl
        context["csat_links"] = csat_links(config.intake_public_url, config.csat_signing_key, context["ticket_id"], expires)
        context["csat_expires"] = describe_instant(expires, recipient.timezone)
    if rule.kind in config.nps_kinds and config.csat_signing_key and recipient.id:
        expires = due + config.csat_link_ttl
        context["survey_id"] = survey_id_for(key)
        context["nps_links"] = nps_links(
            config.intake_public_url,
            config.csat_signing_key,
            survey_id=context["survey_id"],
            customer_id=recipient.id,
            ticket_id=context["ticket_id"],
            expires=expires,
        )
        context["nps_expires"] = describe_instant(expires, recipient.timezone)
    return context


def set_first_reply(context: dict, ticket: TicketView, timezone: str | None) -> None:
    context["first_reply_due"] = describe_instant(from_ms(ticket.first_reply_due_ms), timezone)
    if ticket.first_reply_target_seconds is not None:
        context["first_reply_within"] = describe_duration(ticket.first_reply_target_seconds)
        context["first_reply_within_seconds"] = ticket.first_reply_target_seconds


def released(held: Delivery, ticket: TicketView, *, render: Render, now: datetime) -> Delivery:
    """A message held for the SLA clock, now that it started: rendered again with the reply time, due now.

    The time is shown in the zone the message was first rendered for, so holding it changes nothing else.
    """
    context = dict(held.context)
    set_first_reply(context, ticket, context.get("timezone"))
    rendered = render(held.kind, held.locale, context)
    return held.model_copy(
        update={
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "context": context,
            "awaiting": None,
            "reason": None,
            "next_attempt_at": min(now, held.next_attempt_at),
            "scheduled_for": held.created_at,
        }
    )


def fold_into_digest(
    existing: Delivery | None,
    delivery: Delivery,
    *,
    key: str,
    window_end: datetime,
    quiet_hours: QuietHours | None,
    render: Render,
    now: datetime,
) -> Delivery:
    """The recipient's digest for this window with `delivery` added to it, due when the window ends.

    Each item keeps the held message's whole text (a survey's links too), and a digest to a customer,
    never urgent, waits for the end of their quiet hours like any other message.
    """
    items = list(existing.context.get("items", [])) if existing else []
    items.append({"kind": delivery.kind, "ticket_id": delivery.ticket_id, "subject": delivery.subject, "text": delivery.text})
    due = max(window_end, delivery.next_attempt_at, existing.next_attempt_at if existing else window_end)
    if quiet_hours is not None and delivery.recipient_role is RecipientRole.CUSTOMER:
        due = quiet_hours_end(due, quiet_hours) or due
    context = {"items": items}
    rendered = render(DIGEST_KIND, delivery.locale, context)
    return Delivery(
        id=key,
        ticket_id=existing.ticket_id if existing else delivery.ticket_id,
        kind=DIGEST_KIND,
        channel=delivery.channel,
        recipient=delivery.recipient,
        recipient_role=delivery.recipient_role,
        recipient_id=delivery.recipient_id,
        locale=rendered.locale,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id_for(key),
        correlation_id=delivery.correlation_id,
        causation_id=delivery.causation_id,
        next_attempt_at=due,
        scheduled_for=due,
        created_at=existing.created_at if existing else now,
        context=context,
        reason=f"digest of {len(items)} held messages",
    )


SAMPLE_CONTEXT: dict = {
    "kind": "sample",
    "ticket_id": "TKT-000000000000-sample",
    "subject": "Sample subject",
    "priority": "normal",
    "customer_name": "Ann",
    "recipient_name": "Ada",
    "timezone": "Europe/Berlin",
    "event": {},
    "body": "Sample reply.",
    "agent_id": "ada",
    "first_reply_within": "4 hours",
    "first_reply_within_seconds": 14400,
    "first_reply_due": "2026-03-02 13:30 UTC",
    "csat_links": {str(score): f"https://support.example.com/csat?score={score}" for score in range(1, 6)},
    "csat_expires": "2026-03-16 13:30 UTC",
    "nps_links": {str(score): f"https://support.example.com/nps?score={score}" for score in range(0, 11)},
    "nps_expires": "2026-03-16 13:30 UTC",
    "survey_id": "nps-000000000000000000000000",
    "metric": "first_reply",
    "due_at": "2026-03-02 13:30 UTC",
    "remaining": "15 minutes",
    "reason": "billing level 3",
    "items": [{"kind": "csat_survey", "ticket_id": "TKT-000000000000-sample", "subject": "Sample", "text": "Sample"}],
}
"""Every variable a template may use, with plausible values: each template is rendered with it at start,
so one that names a variable that does not exist stops the service instead of failing each message."""

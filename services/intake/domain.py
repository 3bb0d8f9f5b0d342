"""The ticket, intake's aggregate. Pure: no I/O, so the rules can be tested on their own."""

import secrets
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.events import Channel, Customer, Priority, TicketSubmit


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    ON_HOLD = "on_hold"
    SOLVED = "solved"
    CLOSED = "closed"


class Ticket(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: TicketStatus
    priority: Priority
    channel: Channel
    customer: Customer
    subject: str
    body: str
    required_skills: list[str]
    assignee_id: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 1


def new_ticket_id(now: datetime) -> str:
    """Sortable by creation time and short enough to quote in an email subject: `TKT-19ab3c4d5e6f-8f2a1c`."""
    return f"TKT-{int(now.timestamp() * 1000):x}-{secrets.token_hex(3)}"


def open_ticket(submission: TicketSubmit, *, ticket_id: str, now: datetime) -> Ticket:
    return Ticket(
        id=ticket_id,
        status=TicketStatus.NEW,
        priority=submission.priority or Priority.NORMAL,
        channel=submission.channel,
        customer=submission.customer,
        subject=submission.subject,
        body=submission.body,
        required_skills=sorted(set(submission.required_skills)),
        created_at=now,
        updated_at=now,
    )


def assign(ticket: Ticket, agent_id: str, now: datetime) -> Ticket:
    """Routing chose an agent: a new ticket becomes open; later statuses are the agent's to change."""
    status = TicketStatus.OPEN if ticket.status is TicketStatus.NEW else ticket.status
    return ticket.model_copy(
        update={"assignee_id": agent_id, "status": status, "updated_at": now, "version": ticket.version + 1}
    )

"""The ticket, intake's aggregate, and its lifecycle. Pure: no I/O, so the rules can be tested on their own.

Every change is a function from a ticket to a `Change`: the new ticket (version bumped) and the
facts it publishes, so the service layer only stores and publishes what the domain decided.
"""

import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.events import (
    AuthorType,
    Channel,
    Customer,
    Payload,
    Priority,
    SlaBreached,
    SlaClockEvent,
    SlaClockPaused,
    SlaClockResumed,
    SlaClockStarted,
    SlaFulfilled,
    SlaWarning,
    TicketClosed,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketStatus,
    TicketStatusChanged,
    TicketSubmit,
    TicketTagsChanged,
)

ALLOWED_TRANSITIONS: dict[TicketStatus, tuple[TicketStatus, ...]] = {
    TicketStatus.NEW: (TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.ON_HOLD, TicketStatus.SOLVED),
    TicketStatus.OPEN: (TicketStatus.PENDING, TicketStatus.ON_HOLD, TicketStatus.SOLVED),
    TicketStatus.PENDING: (TicketStatus.OPEN, TicketStatus.ON_HOLD, TicketStatus.SOLVED),
    TicketStatus.ON_HOLD: (TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.SOLVED),
    TicketStatus.SOLVED: (TicketStatus.OPEN, TicketStatus.CLOSED),
    TicketStatus.CLOSED: (),
}
"""new → open → pending / on_hold → solved → closed; solved → open is a reopen; closed is final."""


class Csat(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: int = Field(ge=1, le=5)
    comment: str | None = None
    rated_at: datetime


class SlaSummary(BaseModel):
    """One SLA clock as the ticket view shows it, projected from sla's events."""

    model_config = ConfigDict(frozen=True)

    policy: str
    state: str = Field(description="`running`, `paused` or `fulfilled`.")
    target_seconds: int
    due_at: datetime | None = None
    breached: bool = False


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
    language: str | None = None
    sentiment: float | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    triage_reasons: list[str] = Field(default_factory=list)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    external_id: str | None = None
    previous_agent_id: str | None = None
    follow_up_of: str | None = None
    solved_at: datetime | None = None
    csat: Csat | None = None
    sla: dict[str, SlaSummary] = Field(default_factory=dict, description="SLA clocks by metric, from sla's events.")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    ticket_id: str
    author_type: AuthorType
    author_id: str | None = None
    body: str
    public: bool = True
    created_at: datetime


TICKET_ID_PATTERN = r"TKT-[0-9a-f]{6,16}-[0-9a-f]{6,16}"  # ids made before 40-bit suffixes had 24 bits
_SUBJECT_REFERENCE = re.compile(rf"\[({TICKET_ID_PATTERN})\]")


def new_ticket_id(now: datetime) -> str:
    """Sortable by creation time and short enough to quote in an email subject: `TKT-19ab3c4d5e6f-8f2a1c07d9`.

    A polled batch of commands opens its tickets in the same millisecond, so the random part must
    keep them apart: 40 bits make a clash among 200 of them about one in fifty million."""
    return f"TKT-{int(now.timestamp() * 1000):x}-{secrets.token_hex(5)}"


def new_message_id(now: datetime) -> str:
    return f"MSG-{int(now.timestamp() * 1000):x}-{secrets.token_hex(4)}"


def ticket_reference_in(subject: str) -> str | None:
    """`Re: [TKT-19ab3c4d5e6f-8f2a1c07d9] Refund` → the ticket id: the universal threading fallback."""
    found = _SUBJECT_REFERENCE.search(subject or "")
    return found.group(1) if found else None


# --- channels ----------------------------------------------------------------------------------


class _ChannelMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMetadata(_ChannelMetadata):
    conversation_id: str | None = Field(default=None, max_length=200)
    widget: str | None = Field(default=None, max_length=100)
    page_url: str | None = Field(default=None, max_length=2000)
    visitor_id: str | None = Field(default=None, max_length=200)


class SocialMetadata(_ChannelMetadata):
    network: str = Field(min_length=1, max_length=50, description="e.g. `x`, `facebook`, `instagram`.")
    handle: str | None = Field(default=None, max_length=200)
    post_url: str | None = Field(default=None, max_length=2000)
    direct_message: bool = False


class PhoneMetadata(_ChannelMetadata):
    """A call record."""

    call_id: str | None = Field(default=None, max_length=200)
    caller_number: str | None = Field(default=None, max_length=40)
    direction: str = Field(default="inbound", pattern=r"^(inbound|outbound)$")
    duration_seconds: int | None = Field(default=None, ge=0)
    recording_url: str | None = Field(default=None, max_length=2000)
    voicemail: bool = False


class WebMetadata(_ChannelMetadata):
    form: str | None = Field(default=None, max_length=100)
    page_url: str | None = Field(default=None, max_length=2000)
    user_agent: str | None = Field(default=None, max_length=500)


class EmailMetadata(_ChannelMetadata):
    message_id: str | None = Field(default=None, max_length=998)
    to: str | None = Field(default=None, max_length=998)


class ApiMetadata(_ChannelMetadata):
    model_config = ConfigDict(extra="allow", frozen=True)
    """Other systems' own fields, kept as given."""


CHANNEL_METADATA: dict[Channel, type[_ChannelMetadata]] = {
    Channel.WEB: WebMetadata,
    Channel.EMAIL: EmailMetadata,
    Channel.CHAT: ChatMetadata,
    Channel.SOCIAL: SocialMetadata,
    Channel.PHONE: PhoneMetadata,
    Channel.API: ApiMetadata,
}


class InvalidSubmission(ValueError):
    """A submission that parses but does not make sense (say, phone metadata on a chat)."""


def channel_metadata(channel: Channel, metadata: dict) -> dict:
    """The metadata checked against its channel's kind; the message names each wrong field."""
    try:
        checked = CHANNEL_METADATA[channel].model_validate(metadata).model_dump(exclude_none=True)
    except ValidationError as error:
        problems = [
            f"metadata.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        ]
    else:
        problems = [problem for name, value in checked.items() if (problem := _unstorable(name, value))]
    if problems:
        raise InvalidSubmission(f"{channel} metadata: {'; '.join(problems)}")
    return checked


_INT64 = range(-(2**63), 2**63)


def _unstorable(name: str, value) -> str | None:
    """Why MongoDB could not store the field (NUL in its name, an integer over 64 bits) or JSON not answer it (NaN)."""
    if "\x00" in name:
        return "metadata: field names cannot contain NUL"
    if isinstance(value, int) and value not in _INT64:
        return f"metadata.{name}: integers must fit in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return f"metadata.{name}: numbers must be finite"
    return None


def normalize_tags(tags: list[str]) -> list[str]:
    return sorted({tag.strip().lower() for tag in tags if tag.strip()})


# --- opening -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Triaged:
    """What triage decided (see `triage.py`)."""

    priority: Priority
    required_skills: list[str]
    language: str | None = None
    sentiment: float | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def open_ticket(
    submission: TicketSubmit,
    *,
    ticket_id: str,
    now: datetime,
    triaged: Triaged | None = None,
    customer: Customer | None = None,
    previous_agent_id: str | None = None,
    follow_up_of: str | None = None,
) -> Ticket:
    """A new ticket; without triage, the caller's priority (or normal) and skills."""
    triaged = triaged or Triaged(
        priority=submission.priority or Priority.NORMAL,
        required_skills=sorted(set(submission.required_skills)),
        tags=normalize_tags(submission.tags),
    )
    return Ticket(
        id=ticket_id,
        status=TicketStatus.NEW,
        priority=triaged.priority,
        channel=submission.channel,
        customer=customer or submission.customer,
        subject=submission.subject,
        body=submission.body,
        required_skills=sorted(set(triaged.required_skills)),
        created_at=now,
        updated_at=now,
        language=triaged.language,
        sentiment=triaged.sentiment,
        category=triaged.category,
        tags=triaged.tags,
        triage_reasons=list(triaged.reasons),
        metadata=channel_metadata(submission.channel, submission.metadata),
        external_id=submission.external_id,
        previous_agent_id=previous_agent_id,
        follow_up_of=follow_up_of,
    )


# --- lifecycle ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    ticket: Ticket
    facts: list[Payload]

    @property
    def changed(self) -> bool:
        return bool(self.facts)


class InvalidTransition(Exception):
    def __init__(self, current: TicketStatus, target: TicketStatus) -> None:
        self.current = current
        self.target = target
        self.allowed = [status.value for status in ALLOWED_TRANSITIONS[current]]
        allowed = ", ".join(self.allowed) or "none: the ticket is closed"
        super().__init__(f"cannot change status from {current} to {target}; allowed: {allowed}")


class NotRatable(Exception):
    """A rating for a ticket that is not solved yet."""


class TicketClosedForReplies(Exception):
    """Agents cannot write on a closed ticket; customers' replies start a follow-up instead."""


def _status_facts(ticket: Ticket, target: TicketStatus, now: datetime) -> tuple[dict, list[Payload]]:
    if target is ticket.status:
        return {}, []
    if target not in ALLOWED_TRANSITIONS[ticket.status]:
        raise InvalidTransition(ticket.status, target)
    update: dict = {"status": target}
    facts: list[Payload] = [
        TicketStatusChanged(ticket_id=ticket.id, previous_status=ticket.status, status=target, changed_at=now)
    ]
    if target is TicketStatus.SOLVED:
        update["solved_at"] = now
        facts.append(TicketSolved(ticket_id=ticket.id, assignee_id=ticket.assignee_id, solved_at=now))
    elif target is TicketStatus.CLOSED:
        facts.append(TicketClosed(ticket_id=ticket.id, closed_at=now))
    elif ticket.status is TicketStatus.SOLVED:
        update["solved_at"] = None
        facts.append(TicketReopened(ticket_id=ticket.id, previous_assignee_id=ticket.assignee_id, reopened_at=now))
    return update, facts


def _bumped(ticket: Ticket, update: dict, facts: list[Payload], now: datetime) -> Change:
    if not facts:
        return Change(ticket, [])
    return Change(ticket.model_copy(update={**update, "updated_at": now, "version": ticket.version + 1}), facts)


def edit(
    ticket: Ticket,
    now: datetime,
    *,
    status: TicketStatus | None = None,
    priority: Priority | None = None,
    tags: list[str] | None = None,
) -> Change:
    """An agent's edit: each field that really changes publishes its own fact; nothing changed, no version."""
    update: dict = {}
    facts: list[Payload] = []
    if status is not None:
        update, facts = _status_facts(ticket, status, now)
    if priority is not None and priority is not ticket.priority:
        update["priority"] = priority
        facts.append(
            TicketPriorityChanged(ticket_id=ticket.id, previous_priority=ticket.priority, priority=priority, changed_at=now)
        )
    if tags is not None and (normalized := normalize_tags(tags)) != ticket.tags:
        update["tags"] = normalized
        facts.append(TicketTagsChanged(ticket_id=ticket.id, tags=normalized, changed_at=now))
    return _bumped(ticket, update, facts, now)


def needs_follow_up(ticket: Ticket, author_type: AuthorType, now: datetime, reopen_window: timedelta) -> bool:
    """A customer's reply to a closed ticket, or to one solved longer than the window ago, starts a new ticket."""
    if author_type is not AuthorType.CUSTOMER:
        return False
    if ticket.status is TicketStatus.CLOSED:
        return True
    return ticket.status is TicketStatus.SOLVED and (ticket.solved_at is None or now - ticket.solved_at > reopen_window)


def add_message(ticket: Ticket, message: Message, now: datetime, reopen_window: timedelta) -> Change:
    """A reply or note lands on the ticket. A customer's reply wakes a pending or recently solved ticket."""
    if ticket.status is TicketStatus.CLOSED:
        raise TicketClosedForReplies(f"ticket {ticket.id} is closed")
    if needs_follow_up(ticket, message.author_type, now, reopen_window):
        raise TicketClosedForReplies(f"ticket {ticket.id} was solved more than {reopen_window} ago")
    update: dict = {}
    facts: list[Payload] = []
    customer_wakes = message.author_type is AuthorType.CUSTOMER and ticket.status in (
        TicketStatus.PENDING,
        TicketStatus.SOLVED,
    )
    if customer_wakes:
        update, facts = _status_facts(ticket, TicketStatus.OPEN, now)
    facts.insert(
        0,
        TicketMessageAdded(
            ticket_id=ticket.id,
            message_id=message.id,
            author_type=message.author_type,
            author_id=message.author_id,
            public=message.public,
            body=message.body,
            added_at=now,
        ),
    )
    return _bumped(ticket, update, facts, now)


def close_if_due(ticket: Ticket, now: datetime, reopen_window: timedelta) -> Change:
    """A solved ticket the customer left alone for the whole window is closed for good."""
    if ticket.status is TicketStatus.SOLVED and ticket.solved_at and now - ticket.solved_at > reopen_window:
        update, facts = _status_facts(ticket, TicketStatus.CLOSED, now)
        return _bumped(ticket, update, facts, now)
    return Change(ticket, [])


def assign(ticket: Ticket, agent_id: str, now: datetime) -> Ticket:
    """Routing chose an agent: a new ticket becomes open; later statuses are the agent's to change."""
    status = TicketStatus.OPEN if ticket.status is TicketStatus.NEW else ticket.status
    return ticket.model_copy(
        update={"assignee_id": agent_id, "status": status, "updated_at": now, "version": ticket.version + 1}
    )


def unassign(ticket: Ticket, agent_id: str, now: datetime) -> Ticket:
    """Routing took the ticket back to its queue; the status stays. A stale unassign (another agent now) is a no-op."""
    if ticket.assignee_id != agent_id:
        return ticket
    return ticket.model_copy(update={"assignee_id": None, "updated_at": now, "version": ticket.version + 1})


def rate(ticket: Ticket, score: int, comment: str | None, now: datetime) -> Ticket:
    """One rating per ticket; a later click replaces it. Only a solved (or closed) ticket can be rated."""
    if ticket.status not in (TicketStatus.SOLVED, TicketStatus.CLOSED):
        raise NotRatable(f"ticket {ticket.id} is {ticket.status}; only a solved ticket can be rated")
    return ticket.model_copy(
        update={"csat": Csat(score=score, comment=comment, rated_at=now), "updated_at": now, "version": ticket.version + 1}
    )


def project_sla(current: SlaSummary | None, event: SlaClockEvent) -> SlaSummary:
    """The clock's summary after one of sla's events; the ticket's version is not touched (not an edit)."""
    summary = current or SlaSummary(policy=event.policy, state="running", target_seconds=event.target_seconds)
    summary = summary.model_copy(update={"policy": event.policy, "target_seconds": event.target_seconds})
    if isinstance(event, (SlaClockStarted, SlaClockResumed)):
        return summary.model_copy(update={"state": "running", "due_at": event.due_at, **(
            {"breached": False} if isinstance(event, SlaClockStarted) else {})})
    if isinstance(event, SlaClockPaused):
        return summary.model_copy(update={"state": "paused"})
    if isinstance(event, SlaWarning):
        return summary.model_copy(update={"due_at": event.due_at})
    if isinstance(event, SlaBreached):
        return summary.model_copy(update={"breached": True, "due_at": event.due_at})
    if isinstance(event, SlaFulfilled):
        return summary.model_copy(update={"state": "fulfilled", "breached": event.breached})
    return summary

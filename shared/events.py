"""The v1 event contract: one typed payload per CloudEvents `type`.

Facts are named in the past tense (`ticket.created`), commands from outside in the imperative
(`ticket.submit`). Within a version only additive changes are allowed; a breaking change is a
new `.v2` type published beside the old one.
"""

import importlib
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.networks import validate_email

from shared.envelope import Envelope

SKILL_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"


def _remember_valid_domains() -> None:
    """email_validator checks the domain of an address a character at a time against UTS-46, two thirds of
    the check, and many customers share a few domains: every check in this process (notify's of recipients
    too) remembers the last 1,024 domains that passed. The outcome depends on the domain alone, the result
    is only read, and a domain that fails raises, so it is checked again each time with the same error."""
    module = importlib.import_module("email_validator.validate_email")  # the package's name is the function
    module.validate_email_domain_name = lru_cache(maxsize=1024)(module.validate_email_domain_name)


_remember_valid_domains()


@lru_cache(maxsize=4096)
def _checked_email(value: str) -> str:
    return validate_email(value)[1]


EmailAddress = Annotated[str, AfterValidator(_checked_email), WithJsonSchema({"type": "string", "format": "email"})]
"""An email address, checked and normalised as pydantic's `EmailStr` does it, with the same errors. The check
takes about 40 µs and every service reads a customer's address again in each event about their tickets
(it was a tenth of intake's CPU per HTTP request), so the last 4,096 addresses that passed are remembered."""


class Payload(BaseModel):
    """Base of every event payload; consumers ignore fields they do not know yet."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    EVENT_TYPE: ClassVar[str]


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """Higher is more urgent; queues sort on it."""
        return list(Priority).index(self)


class Channel(StrEnum):
    WEB = "web"
    EMAIL = "email"
    CHAT = "chat"
    SOCIAL = "social"
    PHONE = "phone"
    API = "api"


class CustomerTier(StrEnum):
    STANDARD = "standard"
    PREMIUM = "premium"
    VIP = "vip"


class AuthorType(StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"


class Customer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=100)
    email: EmailAddress | None = None
    name: str | None = Field(default=None, max_length=200)
    tier: CustomerTier | None = None
    language: str | None = Field(default=None, max_length=35, description="BCP 47 tag, e.g. `de` or `pt-BR`.")
    timezone: str | None = Field(default=None, max_length=64, description="IANA name, e.g. `Europe/Berlin`.")

    @model_validator(mode="after")
    def _identified(self) -> "Customer":
        if self.id is None and self.email is None:
            raise ValueError("a customer needs an id or an email")
        return self


Skill = str


class TicketSubmit(Payload):
    """Command from an outside system: please open a ticket."""

    EVENT_TYPE: ClassVar[str] = "support.ticket.submit.v1"

    channel: Channel
    customer: Customer
    subject: str = Field(min_length=1, max_length=500)
    body: str = Field(min_length=1, max_length=100_000)
    required_skills: list[Annotated[Skill, Field(pattern=SKILL_PATTERN)]] = Field(default_factory=list, max_length=20)
    priority: Priority | None = None
    external_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="The channel's own message id: a repeat opens no second ticket."
    )
    metadata: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, max_length=50, description="Channel-specific details (chat, social, phone call record)."
    )
    language: str | None = Field(default=None, max_length=35, description="Caller-supplied; wins over detection.")
    category: str | None = Field(default=None, pattern=SKILL_PATTERN, description="Caller-supplied; wins over triage.")
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(default_factory=list, max_length=20)


class TicketCreated(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.created.v1"

    ticket_id: str
    channel: Channel
    customer: Customer
    subject: str
    priority: Priority
    required_skills: list[Skill]
    created_at: AwareDatetime
    language: str | None = None
    sentiment: float | None = Field(default=None, ge=-1, le=1)
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    triage_reasons: list[str] = Field(default_factory=list)
    previous_agent_id: str | None = Field(default=None, description="Affinity hint: who helped this customer last.")
    required_skill_levels: dict[Skill, Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=dict, description="Minimum level per required skill; a required skill not named needs level 1."
    )
    follow_up_of: str | None = Field(default=None, description="The solved ticket a late reply started this one from.")


class TicketMessageAdded(Payload):
    """A reply or an internal note (`public: false`) on a ticket."""

    EVENT_TYPE: ClassVar[str] = "support.ticket.message_added.v1"

    ticket_id: str
    message_id: str
    author_type: AuthorType
    author_id: str | None = None
    public: bool
    body: str = Field(description="Carried so notify can send an agent's public reply to the customer.")
    added_at: AwareDatetime


class TicketStatus(StrEnum):
    """Where a ticket stands; intake decides every change and says so in `TicketStatusChanged`."""

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    """Waiting on the customer."""
    ON_HOLD = "on_hold"
    """Waiting on a third party."""
    SOLVED = "solved"
    CLOSED = "closed"


class TicketStatusChanged(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.status_changed.v1"

    ticket_id: str
    previous_status: TicketStatus
    status: TicketStatus
    changed_at: AwareDatetime


class TicketPriorityChanged(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.priority_changed.v1"

    ticket_id: str
    previous_priority: Priority
    priority: Priority
    changed_at: AwareDatetime


class TicketTagsChanged(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.tags_changed.v1"

    ticket_id: str
    tags: list[str]
    changed_at: AwareDatetime


class TicketSolved(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.solved.v1"

    ticket_id: str
    assignee_id: str | None = None
    solved_at: AwareDatetime


class TicketReopened(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.reopened.v1"

    ticket_id: str
    previous_assignee_id: str | None = None
    reopened_at: AwareDatetime


class TicketClosed(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.closed.v1"

    ticket_id: str
    closed_at: AwareDatetime


class TicketCsatReceived(Payload):
    """A customer rated a solved ticket (1..5) from notify's signed survey link; a later rating replaces it."""

    EVENT_TYPE: ClassVar[str] = "support.ticket.csat_received.v1"

    ticket_id: str
    score: int = Field(ge=1, le=5)
    comment: str | None = None
    assignee_id: str | None = None
    rated_at: AwareDatetime


class CustomerNpsReceived(Payload):
    """A customer answered notify's relationship survey (0..10, "how likely are you to recommend us").

    Published by intake once per survey: a second answer to the same survey is refused, not replaced.
    """

    EVENT_TYPE: ClassVar[str] = "support.customer.nps_received.v1"

    survey_id: str
    customer_id: str
    ticket_id: str | None = Field(default=None, description="The solved ticket whose survey this answers.")
    score: int = Field(ge=0, le=10)
    comment: str | None = None
    answered_at: AwareDatetime


class TicketAssigned(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.assigned.v1"

    ticket_id: str
    agent_id: str
    reason: str = Field(description="Why this agent was chosen, for people reading the audit trail.")
    assigned_at: AwareDatetime
    team: str | None = Field(default=None, description="The agent's team when assigned, for reports by team.")


class TicketUnassigned(Payload):
    """The ticket went back to the queue, keeping its original age (say, its agent went offline)."""

    EVENT_TYPE: ClassVar[str] = "support.ticket.unassigned.v1"

    ticket_id: str
    agent_id: str
    reason: str
    unassigned_at: AwareDatetime


class TicketOffered(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.offered.v1"

    ticket_id: str
    offer_id: str
    agent_id: str
    expires_at: AwareDatetime


class OfferOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"


class TicketOfferAnswered(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.offer_answered.v1"

    ticket_id: str
    offer_id: str
    agent_id: str
    outcome: OfferOutcome
    answered_at: AwareDatetime


class TicketEscalated(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.escalated.v1"

    ticket_id: str
    step: int = Field(ge=1)
    action: str = Field(description="What the step did, e.g. `relax_skill_level`, `widen_to_l2`, `supervisor_queue`.")
    description: str
    escalated_at: AwareDatetime


class AgentStatusChanged(Payload):
    """From a workforce-management system: an agent's presence changed."""

    EVENT_TYPE: ClassVar[str] = "support.agent.status_changed.v1"

    agent_id: str
    status: str = Field(description="`available`, `away` or `offline`.")
    changed_at: AwareDatetime


class SlaClockEvent(Payload):
    """Fields every SLA clock event carries."""

    ticket_id: str
    metric: str = Field(description="`first_reply`, `next_reply`, `periodic_update` or `resolution`.")
    policy: str = "default"
    target_seconds: int


class SlaClockStarted(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.clock_started.v1"

    started_at: AwareDatetime
    due_at: AwareDatetime


class SlaClockPaused(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.clock_paused.v1"

    elapsed_seconds: float
    paused_at: AwareDatetime


class SlaClockResumed(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.clock_resumed.v1"

    resumed_at: AwareDatetime
    due_at: AwareDatetime


class SlaWarning(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.warning.v1"

    threshold: float = Field(gt=0, lt=1, description="Share of the target used up, e.g. 0.75.")
    due_at: AwareDatetime
    remaining_seconds: float
    warned_at: AwareDatetime


class SlaBreached(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.breached.v1"

    due_at: AwareDatetime
    breached_at: AwareDatetime


class SlaFulfilled(SlaClockEvent):
    EVENT_TYPE: ClassVar[str] = "support.sla.fulfilled.v1"

    elapsed_seconds: float
    breached: bool
    fulfilled_at: AwareDatetime


class NotificationSent(Payload):
    EVENT_TYPE: ClassVar[str] = "support.notification.sent.v1"

    notification_id: str
    ticket_id: str
    kind: str
    channel: str
    sent_at: AwareDatetime


class NotificationFailed(Payload):
    EVENT_TYPE: ClassVar[str] = "support.notification.failed.v1"

    notification_id: str
    ticket_id: str
    kind: str
    channel: str
    reason: str
    attempts: int
    failed_at: AwareDatetime


class NotificationSuppressed(Payload):
    """Not sent on purpose: opted out, an address that is not valid, quiet hours turned into a digest."""

    EVENT_TYPE: ClassVar[str] = "support.notification.suppressed.v1"

    notification_id: str
    ticket_id: str
    kind: str
    channel: str
    reason: str
    suppressed_at: AwareDatetime


EVENT_TYPES: dict[str, type[Payload]] = {
    payload.EVENT_TYPE: payload
    for payload in (
        TicketSubmit,
        TicketCreated,
        TicketMessageAdded,
        TicketStatusChanged,
        TicketPriorityChanged,
        TicketTagsChanged,
        TicketSolved,
        TicketReopened,
        TicketClosed,
        TicketCsatReceived,
        CustomerNpsReceived,
        TicketAssigned,
        TicketUnassigned,
        TicketOffered,
        TicketOfferAnswered,
        TicketEscalated,
        AgentStatusChanged,
        SlaClockStarted,
        SlaClockPaused,
        SlaClockResumed,
        SlaWarning,
        SlaBreached,
        SlaFulfilled,
        NotificationSent,
        NotificationFailed,
        NotificationSuppressed,
    )
}


class InvalidEvent(ValueError):
    """A message that is not a valid event of a known type; it belongs in the dead-letter topic."""


class UnknownEventType(LookupError):
    """An event of a type this release does not know; consumers skip it (additive evolution)."""


def parse_event(raw: bytes | None) -> Envelope:
    """Validate a structured-mode CloudEvent and its typed payload.

    A valid event of a known type is validated once, as that type: its `type` alone is read first, which
    costs a quarter of validating the whole envelope. Only an event that fails, or whose type nobody knows,
    has its envelope validated on its own, so that what is wrong is said in the envelope's terms when the
    envelope is the problem, and in its type's terms when the payload is."""
    if not raw:
        raise InvalidEvent("empty message")
    try:
        payload_type = EVENT_TYPES.get(_EventType.model_validate_json(raw).type)
    except ValidationError:
        payload_type = None
    if payload_type is not None:
        try:
            return Envelope[payload_type].model_validate_json(raw)
        except ValidationError as error:
            payload_error = error
    try:
        header = Envelope[_AnyPayload].model_validate_json(raw)
    except ValidationError as error:
        raise InvalidEvent(_describe(error)) from error
    if payload_type is None:
        raise UnknownEventType(header.type)
    raise InvalidEvent(f"{header.type}: {_describe(payload_error)}") from payload_error


class _EventType(BaseModel):
    type: str


class _AnyPayload(BaseModel):
    model_config = ConfigDict(extra="allow")


def _describe(error: ValidationError) -> str:
    """One line a person can act on, e.g. `data.customer.email: value is not a valid email address`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'message'}: {problem['msg']}"
        for problem in error.errors(include_url=False)
        if problem["type"] != "default_factory_not_called"  # `correlationid` could not default: the `id` problem says why
    )

"""The v1 event contract: one typed payload per CloudEvents `type`.

Facts are named in the past tense (`ticket.created`), commands from outside in the imperative
(`ticket.submit`). Within a version only additive changes are allowed; a breaking change is a
new `.v2` type published beside the old one.
"""

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, ValidationError, model_validator

from shared.envelope import Envelope

SKILL_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"


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


class Customer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=100)
    email: EmailStr | None = None
    name: str | None = Field(default=None, max_length=200)

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


class TicketCreated(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.created.v1"

    ticket_id: str
    channel: Channel
    customer: Customer
    subject: str
    priority: Priority
    required_skills: list[Skill]
    created_at: AwareDatetime


class TicketAssigned(Payload):
    EVENT_TYPE: ClassVar[str] = "support.ticket.assigned.v1"

    ticket_id: str
    agent_id: str
    reason: str = Field(description="Why this agent was chosen, for people reading the audit trail.")
    assigned_at: AwareDatetime


class SlaClockStarted(Payload):
    EVENT_TYPE: ClassVar[str] = "support.sla.clock_started.v1"

    ticket_id: str
    metric: str
    target_seconds: int
    started_at: AwareDatetime
    due_at: AwareDatetime


class NotificationSent(Payload):
    EVENT_TYPE: ClassVar[str] = "support.notification.sent.v1"

    notification_id: str
    ticket_id: str
    kind: str
    channel: str
    sent_at: AwareDatetime


EVENT_TYPES: dict[str, type[Payload]] = {
    payload.EVENT_TYPE: payload
    for payload in (TicketSubmit, TicketCreated, TicketAssigned, SlaClockStarted, NotificationSent)
}


class InvalidEvent(ValueError):
    """A message that is not a valid event of a known type; it belongs in the dead-letter topic."""


class UnknownEventType(LookupError):
    """An event of a type this release does not know; consumers skip it (additive evolution)."""


def parse_event(raw: bytes | None) -> Envelope:
    """Validate a structured-mode CloudEvent and its typed payload."""
    if not raw:
        raise InvalidEvent("empty message")
    try:
        header = Envelope[_AnyPayload].model_validate_json(raw)
    except ValidationError as error:
        raise InvalidEvent(_describe(error)) from error
    payload_type = EVENT_TYPES.get(header.type)
    if payload_type is None:
        raise UnknownEventType(header.type)
    try:
        return Envelope[payload_type].model_validate_json(raw)
    except ValidationError as error:
        raise InvalidEvent(f"{header.type}: {_describe(error)}") from error


class _AnyPayload(BaseModel):
    model_config = ConfigDict(extra="allow")


def _describe(error: ValidationError) -> str:
    """One line a person can act on, e.g. `data.customer.email: value is not a valid email address`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'message'}: {problem['msg']}"
        for problem in error.errors(include_url=False)
    )

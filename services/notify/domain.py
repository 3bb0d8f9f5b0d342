"""Deliveries: what notify owes someone and the rules for sending it. Pure: no I/O."""

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.envelope import Envelope
from shared.events import TicketCreated

DEFAULT_LOCALE = "en"
MESSAGE_ID_DOMAIN = "switchboard.local"


class DeliveryKind(StrEnum):
    ACKNOWLEDGEMENT = "acknowledgement"


class DeliveryChannel(StrEnum):
    EMAIL = "email"


class RecipientRole(StrEnum):
    CUSTOMER = "customer"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


Render = Callable[[DeliveryKind, str, Mapping[str, object]], RenderedEmail]
"""Renders the templates of a kind in a locale: `render(kind, locale, context)`."""


class Delivery(BaseModel):
    """One message owed to one recipient, rendered when it is decided so every resend is identical."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The deduplication key `{event id}:{recipient role}:{kind}`: one delivery per cause, recipient and kind."""
    ticket_id: str
    kind: DeliveryKind
    channel: DeliveryChannel
    recipient: str
    locale: str
    subject: str
    text: str
    html: str
    message_id: str
    correlation_id: str
    causation_id: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None


class SendFailure(Exception):
    """A send the server did not accept; `permanent` when trying again cannot help (say, 550 no such mailbox)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: timedelta
    cap: timedelta = timedelta(minutes=15)

    def delay(self, attempt: int, jitter: float) -> timedelta:
        """Doubling from `base` after each attempt, capped; `jitter` in [0, 1) picks a point in the upper
        half, so deliveries that failed together (a mail server outage) do not all come back together."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2.0 ** min(attempt - 1, 32))
        return timedelta(seconds=ceiling * (1 + jitter) / 2)


def delivery_key(cause_id: object, role: RecipientRole, kind: DeliveryKind) -> str:
    return f"{cause_id}:{role}:{kind}"


def message_id_for(key: str) -> str:
    """Derived from the deduplication key, so a resend after a crash is recognisably the same message."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{MESSAGE_ID_DOMAIN}>"


def acknowledgement(event: Envelope[TicketCreated], *, render: Render, now: datetime) -> Delivery | None:
    """The email telling the customer their request arrived and its ticket reference; none without an address."""
    ticket = event.data
    if ticket.customer.email is None:
        return None
    key = delivery_key(event.id, RecipientRole.CUSTOMER, DeliveryKind.ACKNOWLEDGEMENT)
    email = render(
        DeliveryKind.ACKNOWLEDGEMENT,
        DEFAULT_LOCALE,
        {"ticket_id": ticket.ticket_id, "subject": ticket.subject, "customer_name": ticket.customer.name},
    )
    return Delivery(
        id=key,
        ticket_id=ticket.ticket_id,
        kind=DeliveryKind.ACKNOWLEDGEMENT,
        channel=DeliveryChannel.EMAIL,
        recipient=str(ticket.customer.email),
        locale=DEFAULT_LOCALE,
        subject=email.subject,
        text=email.text,
        html=email.html,
        message_id=message_id_for(key),
        correlation_id=event.correlationid,
        causation_id=str(event.id),
        next_attempt_at=now,
        created_at=now,
    )


def sent(delivery: Delivery, at: datetime) -> Delivery:
    return delivery.model_copy(update={"state": DeliveryState.SENT, "sent_at": at})


def after_failure(
    delivery: Delivery, failure: SendFailure, *, policy: RetryPolicy, now: datetime, jitter: float
) -> Delivery:
    """A permanent failure or the last allowed attempt fails the delivery; anything else is tried again later."""
    if failure.permanent or delivery.attempts >= policy.max_attempts:
        return delivery.model_copy(update={"state": DeliveryState.FAILED, "last_error": failure.reason})
    retry_at = now + policy.delay(delivery.attempts, jitter)
    return delivery.model_copy(update={"next_attempt_at": retry_at, "last_error": failure.reason})

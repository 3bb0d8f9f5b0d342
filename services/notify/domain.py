"""Deliveries: what notify owes someone and the rules for sending it. Pure: no I/O.

A rule (see `rules.py`) says which event owes which audience which kind of message; the functions
here turn one rule, one event and what notify knows about the ticket, the recipient and their
preferences into a `Delivery`: pending (due now or later) or suppressed with a reason a person can read.
"""

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.signing import MESSAGE_ID_DOMAIN, csat_signature, nps_signature

DEFAULT_LOCALE = "en"
DIGEST_KIND = "digest"


class DeliveryKind(StrEnum):
    """The kinds the shipped rules use; a rules file may name others (each needs its templates)."""

    ACKNOWLEDGEMENT = "acknowledgement"
    AGENT_REPLY = "agent_reply"
    ASSIGNMENT = "assignment"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"
    CSAT_SURVEY = "csat_survey"
    NPS_SURVEY = "nps_survey"
    FOLLOW_UP = "follow_up"
    DIGEST = "digest"


class DeliveryChannel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    SMS = "sms"


class RecipientRole(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    TEAM = "team"
    SUPERVISORS = "supervisors"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: str = DEFAULT_LOCALE


Render = Callable[[str, str, Mapping[str, object]], RenderedEmail]
"""Renders the templates of a kind in a locale (falling back to English): `render(kind, locale, context)`."""


class Delivery(BaseModel):
    """One message owed to one recipient, rendered when it is decided so every resend is identical."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The deduplication key `{event id}:{recipient role}:{kind}`: one delivery per cause, recipient and kind."""
    ticket_id: str
    kind: str
    channel: DeliveryChannel
    recipient: str
    recipient_role: RecipientRole = RecipientRole.CUSTOMER
    recipient_id: str | None = None
    locale: str
    subject: str
    text: str
    html: str
    message_id: str
    in_reply_to: str | None = None
    correlation_id: str
    causation_id: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: datetime
    created_at: datetime
    scheduled_for: datetime | None = None
    """When it was first due (after any delay and quiet hours): the mail's Date, the same on every resend."""
    sent_at: datetime | None = None
    last_error: str | None = None
    reason: str | None = None
    """Why it was suppressed, or why it is held (quiet hours, waiting for the SLA policy)."""
    urgent: bool = False
    awaiting: str | None = None
    """`sla:<metric>` while an acknowledgement waits for the SLA clock that gives its reply time."""
    context: dict = Field(default_factory=dict)
    """What the templates were rendered with, kept so a held message can be rendered again."""


class SendFailure(Exception):
    """A send the other side did not accept; `permanent` when trying again cannot help (550 no such
    mailbox, a webhook's 404); `retry_after` when the other side said when to come back (429)."""

    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: timedelta
    cap: timedelta = timedelta(minutes=15)
    max_retry_after: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, jitter: float) -> timedelta:
        """Doubling from `base` after each attempt, capped; `jitter` in [0, 1) picks a point in the upper
        half, so deliveries that failed together (a mail server outage) do not all come back together."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2.0 ** min(attempt - 1, 32))
        return timedelta(seconds=ceiling * (1 + jitter) / 2)


def delivery_key(cause_id: object, role: RecipientRole | str, kind: str) -> str:
    return f"{cause_id}:{role}:{kind}"


def message_id_for(key: str) -> str:
    """Derived from the deduplication key, so a resend after a crash is recognisably the same message."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{MESSAGE_ID_DOMAIN}>"


def sent(delivery: Delivery, at: datetime) -> Delivery:
    return delivery.model_copy(update={"state": DeliveryState.SENT, "sent_at": at})


def after_failure(
    delivery: Delivery, failure: SendFailure, *, policy: RetryPolicy, now: datetime, jitter: float
) -> Delivery:
    """A permanent failure or the last allowed attempt fails the delivery; anything else is tried again later,
    no sooner than the other side asked (`Retry-After`)."""
    if failure.permanent or delivery.attempts >= policy.max_attempts:
        return delivery.model_copy(update={"state": DeliveryState.FAILED, "last_error": failure.reason})
    wait = policy.delay(delivery.attempts, jitter)
    if failure.retry_after is not None:
        wait = max(wait, min(timedelta(seconds=failure.retry_after), policy.max_retry_after))
    return delivery.model_copy(update={"next_attempt_at": now + wait, "last_error": failure.reason})


# --- recipients and addresses ------------------------------------------------------------------


PHONE_PATTERN = r"^\+[0-9]{6,15}$"
"""E.164, in ASCII digits: the form SMS providers take."""


def address_problem(channel: DeliveryChannel, address: str | None) -> str | None:
    """Why a message cannot go to `address` on `channel`, in words fit to show; None when it can."""
    if not address:
        return f"no {channel} address"
    if channel is DeliveryChannel.EMAIL:
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as error:
            return f"invalid email address: {error}"
    elif channel is DeliveryChannel.WEBHOOK:
        if not address.startswith(("http://", "https://")):
            return "invalid webhook URL: it must start with http:// or https://"
    elif channel is DeliveryChannel.SMS:
        if not re.fullmatch(PHONE_PATTERN, address):
            return "invalid phone number: it must be in E.164 form, e.g. +4930123456"
    return None


def locale_of(*candidates: str | None) -> str:
    for candidate in candidates:
        if candidate:
            return candidate
    return DEFAULT_LOCALE


# --- quiet hours -------------------------------------------------------------------------------


class QuietHours(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time = Field(description="Local time quiet hours begin, e.g. `22:00`.")
    end: time = Field(description="Local time they end, e.g. `07:00`; before `start` means overnight.")
    timezone: str = Field(default="UTC", description="IANA name, e.g. `Europe/Berlin`.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _written(cls, value: object) -> object:
        """Pydantic would read a number as seconds since midnight; the schema says a time is a string."""
        if isinstance(value, int | float):
            raise ValueError("write a time as a string, e.g. 22:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not valid_timezone(value):
            raise ValueError(f"unknown timezone {value!r}: use an IANA name such as Europe/Berlin")
        return value

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def quiet_hours_end(at: datetime, quiet: QuietHours) -> datetime | None:
    """When the quiet period `at` falls in ends, or None when `at` is not in quiet hours."""
    if quiet.start == quiet.end:
        return None
    zone = quiet.zone()
    local = at.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside, end_day = quiet.start <= clock < quiet.end, local.date()
    else:  # overnight, e.g. 22:00-07:00
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, quiet.end, tzinfo=zone).astimezone(UTC)


# --- rate limit and digest ---------------------------------------------------------------------


def digest_window(now: datetime, window: timedelta) -> tuple[int, datetime]:
    """The fixed window `now` is in (its number) and when it ends: a digest goes out at its end."""
    seconds = window.total_seconds()
    number = int(now.timestamp() // seconds)
    return number, datetime.fromtimestamp((number + 1) * seconds, UTC)


def digest_key(role: RecipientRole | str, recipient: str, window_number: int) -> str:
    return f"digest:{role}:{hashlib.sha256(recipient.encode()).hexdigest()[:24]}:{window_number}"


# --- CSAT links --------------------------------------------------------------------------------


def csat_links(base_url: str, key: str, ticket_id: str, expires: datetime) -> dict[str, str]:
    """One signed link per score, 1 to 5."""
    expires_s = int(expires.timestamp())
    signature = csat_signature(key, ticket_id, expires_s)
    return {
        str(score): f"{base_url.rstrip('/')}/v1/tickets/{ticket_id}/csat?"
        + urlencode({"score": score, "expires": expires_s, "signature": signature})
        for score in range(1, 6)
    }


# --- NPS links and the once-per-customer limit ----------------------------------------------------


NPS_SCORES = range(0, 11)


def survey_id_for(key: str) -> str:
    """Derived from the delivery's key, so the survey a delivery carries is the same however often it is planned."""
    return f"nps-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def nps_links(
    base_url: str, key: str, *, survey_id: str, customer_id: str, ticket_id: str, expires: datetime
) -> dict[str, str]:
    """One signed link per score, 0 to 10, under the customer: intake takes the first answer to the survey."""
    expires_s = int(expires.timestamp())
    signature = nps_signature(key, survey_id, customer_id, ticket_id, expires_s)
    path = f"{base_url.rstrip('/')}/v1/customers/{quote(customer_id, safe='')}/nps?"
    return {
        str(score): path
        + urlencode(
            {"survey": survey_id, "ticket_id": ticket_id, "score": score, "expires": expires_s, "signature": signature}
        )
        for score in NPS_SCORES
    }


def customer_limit_key(kind: str, customer: str) -> str:
    """The `_id` of a customer's period of a once-per-customer kind."""
    return f"{kind}:{customer}"


DURATION_WORDS = {
    "en": ("minute", "minutes", "hour", "hours", "days"),
    "de": ("Minute", "Minuten", "Stunde", "Stunden", "Tagen"),
}
"""Minute, minutes, hour, hours, days in each language a shipped template words a duration in (German
in the dative, as after "innerhalb von"); any other language gets English."""


def describe_duration(seconds: float, language: str = "en") -> str:
    """`45 minutes`, `1 hour`, `4 hours`, `2 days`: for a person, not to the second. Templates call it as
    the `duration` filter, in their own language: `{{ first_reply_within_seconds | duration("de") }}`."""
    minute, minutes, hour, hours, days = DURATION_WORDS.get(language, DURATION_WORDS["en"])
    count = max(1, round(seconds / 60))
    if count < 60:
        return f"{count} {minute if count == 1 else minutes}"
    count = round(count / 60)
    if count < 48:
        return f"{count} {hour if count == 1 else hours}"
    return f"{round(count / 24)} {days}"


def describe_instant(at: datetime, timezone: str | None) -> str:
    zone = ZoneInfo(timezone) if timezone and valid_timezone(timezone) else UTC
    local = at.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

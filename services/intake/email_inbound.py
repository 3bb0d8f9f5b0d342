"""Inbound email, pure: parsing RFC 5322 or its JSON form, threading, quote stripping.

The webhook that posts it is signed as `shared/signing.py` says; within the signature's window the
service remembers signatures, so a captured request cannot be replayed.
"""

import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.errors import MessageError
from email.message import EmailMessage
from email.utils import parseaddr

from pydantic import BaseModel, ConfigDict, Field

from services.intake.domain import TICKET_ID_PATTERN, ticket_reference_in
from shared.events import EmailAddress
from shared.signing import MESSAGE_ID_DOMAIN

_NOTIFY_THREAD_ROOT = re.compile(rf"<({TICKET_ID_PATTERN})@{re.escape(MESSAGE_ID_DOMAIN)}>")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


# --- the message -------------------------------------------------------------------------------


class InvalidEmail(ValueError):
    """An email intake cannot take in (no sender, no text); the message says why."""


class JsonEmail(BaseModel):
    """The JSON form of an inbound email, as mail providers' inbound webhooks post it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message_id: str | None = Field(default=None, max_length=998)
    from_: str = Field(alias="from", min_length=3, max_length=998, description="`Ann Lee <ann@example.com>` or an address.")
    to: str | None = Field(default=None, max_length=998)
    subject: str = Field(default="", max_length=998)
    text: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    in_reply_to: str | None = Field(default=None, max_length=998)
    references: list[str] | str | None = None


class _Sender(BaseModel):
    email: EmailAddress


@dataclass(frozen=True)
class InboundEmail:
    message_id: str | None
    from_email: str
    from_name: str | None
    to: str | None
    subject: str
    body: str
    """The new text only: quoted history and signatures are stripped."""
    replied_to: list[str] = field(default_factory=list)
    """In-Reply-To first, then References newest first: the Message-IDs this mail answers."""

    def ticket_reference(self) -> str | None:
        """The ticket notify's mails name: their thread root `<TKT-…@switchboard.local>`, else `[TKT-…]` in the subject."""
        for message_id in self.replied_to:
            if found := _NOTIFY_THREAD_ROOT.fullmatch(message_id):
                return found.group(1)
        return ticket_reference_in(self.subject)


def parse_raw(raw: bytes) -> InboundEmail:
    message: EmailMessage = message_from_bytes(raw, policy=policy.default)  # type: ignore[assignment]
    name, address = parseaddr(_header(message, "From"))
    subject = _header(message, "Subject")
    try:
        body_part = message.get_body(("plain", "html"))
        text = body_part.get_content() if body_part is not None else ""
        if body_part is not None and body_part.get_content_type() == "text/html":
            text = html_to_text(text)
    except (LookupError, ValueError, AttributeError, MessageError) as error:
        raise InvalidEmail(f"cannot read the message: {error}") from None
    references = _message_ids(_header(message, "References"))
    return _inbound(
        message_id=(_message_ids(_header(message, "Message-ID")) or [None])[0],
        sender=(name, address),
        to=_header(message, "To") or None,
        subject=subject,
        text=text,
        replied_to=_message_ids(_header(message, "In-Reply-To")) + list(reversed(references)),
    )


def _header(message: EmailMessage, name: str) -> str:
    """Every occurrence of the header, as text. The stdlib parses headers on access, and some malformed
    ones make it raise (an IndexError for `To: <`), so this says which header is wrong."""
    try:
        return " ".join(str(value) for value in message.get_all(name, []))
    except (LookupError, ValueError, MessageError):
        raise InvalidEmail(f"the {name} header is malformed") from None


def parse_json(data: JsonEmail) -> InboundEmail:
    references = data.references if isinstance(data.references, list) else [data.references or ""]
    text = data.text if data.text else html_to_text(data.html or "")
    return _inbound(
        message_id=(_message_ids(data.message_id or "") or [None])[0],
        sender=parseaddr(data.from_),
        to=data.to,
        subject=data.subject,
        text=text,
        replied_to=_message_ids(data.in_reply_to or "") + list(reversed(_message_ids(" ".join(references)))),
    )


def _inbound(*, message_id, sender: tuple[str, str], to, subject: str, text: str, replied_to: list[str]) -> InboundEmail:
    name, address = sender
    try:
        email = _Sender(email=address).email
    except ValueError:
        raise InvalidEmail("the From header has no valid address") from None
    body = strip_quoted(text)
    if not body:
        body = text.strip() or subject.strip()
    if not body:
        raise InvalidEmail("the message has neither text nor a subject")
    seen: list[str] = []
    for message_id_ in replied_to:
        if message_id_ not in seen:
            seen.append(message_id_)
    return InboundEmail(
        message_id=message_id,
        from_email=str(email),
        from_name=name or None,
        to=to,
        subject=(subject.strip() or "(no subject)")[:500],
        body=body[:100_000],
        replied_to=seen,
    )


def _message_ids(header: str) -> list[str]:
    return _MESSAGE_ID.findall(header)


# --- quoted history ----------------------------------------------------------------------------

_REPLY_HEADER = re.compile(
    r"^\s*("
    r"On .{1,300}wrote:\s*$"  # Gmail, Apple Mail
    r"|Am .{1,300}schrieb .{0,200}:\s*$"  # German clients
    r"|Le .{1,300}a écrit\s*:\s*$"  # French clients
    r"|El .{1,300}escribió:\s*$"  # Spanish clients
    r"|-{2,}\s*Original Message\s*-{2,}"  # Outlook
    r"|-{2,}\s*Ursprüngliche Nachricht\s*-{2,}"
    r"|_{10,}\s*$"  # Outlook's rule above the quoted header block
    r"|From:\s.+$"  # a forwarded/quoted header block
    r")",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^(-- |--|Sent from my .+|Von meinem .+ gesendet)\s*$")


def strip_quoted(text: str) -> str:
    """The reply's own text: stops at the first quote header ("On … wrote:"), drops `>` lines and the signature."""
    kept: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        if _REPLY_HEADER.match(line):
            # "On Mon, 1 Jan 2026 at 10:00, Ann <ann@example.com>" may wrap before "wrote:".
            break
        if index + 1 < len(lines) and re.match(r"^\s*On .{1,300}$", line) and lines[index + 1].strip().endswith("wrote:"):
            break
        if _SIGNATURE.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip()


_TAG = re.compile(r"<[^>]+>")
_BLOCK = re.compile(r"<\s*(br|p|/p|div|/div|li|/li|tr|/tr)\b[^>]*>", re.IGNORECASE)
_QUOTE_BLOCK = re.compile(r"<blockquote\b.*?</blockquote>", re.IGNORECASE | re.DOTALL)


def html_to_text(html: str) -> str:
    """Enough HTML to text for a support message: quotes dropped, blocks become lines, tags removed."""
    import html as entities

    without_quotes = _QUOTE_BLOCK.sub("", html)
    text = _TAG.sub("", _BLOCK.sub("\n", without_quotes))
    return entities.unescape(re.sub(r"\n{3,}", "\n\n", text)).strip()

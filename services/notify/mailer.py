"""Sends deliveries as email through the SMTP server that SMTP_URL names (aiosmtplib)."""

import email.policy
import hashlib
import re
import time
from dataclasses import dataclass, field
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from services.notify.domain import Delivery, SendFailure

TICKET_HEADER = "X-Switchboard-Ticket"
SEND_TIMEOUT_SECONDS = 30.0
IDLE_CONNECTION_SECONDS = 30.0
SMTP_MAX_LINE_BYTES = 998
HEADER_LINE_CHARACTERS = 78
"""RFC 5322's recommended limit, to which longer headers are folded."""
CRLF = "\r\n"
_QUOTED_PRINTABLE_UTF8 = Charset("utf-8")
_QUOTED_PRINTABLE_UTF8.body_encoding = QP
_LINE_END = re.compile(r"\r\n|\r|\n")
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    use_tls: bool = False
    start_tls: bool | None = None
    """True: STARTTLS or no mail; False: never; None: when the server offers it (so a password never goes in clear
    to a server that could have protected it)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://[user:password@]host:port[?starttls=true|false]`, or `smtps://` for TLS from the first byte.

    Errors never quote the URL: it may hold a password.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("SMTP_URL names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("SMTP_URL has an invalid port") from None
    options = parse_qs(parts.query)
    if unknown := sorted(set(options) - {"starttls"}):
        raise ValueError(f"SMTP_URL has unknown options: {', '.join(unknown)}")
    starttls = options.get("starttls", [""])[-1].lower()
    if starttls not in ("true", "false", ""):
        raise ValueError("SMTP_URL: starttls must be true or false")
    implicit_tls = parts.scheme == "smtps"
    if implicit_tls and starttls:
        raise ValueError("SMTP_URL: smtps:// is TLS from the start; starttls is for smtp://")
    return SmtpServer(
        hostname=parts.hostname,
        port=port or (465 if implicit_tls else 25),
        use_tls=implicit_tls,
        start_tls=False if implicit_tls else {"true": True, "false": False}.get(starttls),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class Mail:
    """A message as it goes over SMTP: the envelope and the bytes of the message."""

    sender: str
    recipient: str
    data: bytes
    smtputf8: bool = False
    """An address is not ASCII: the server must accept SMTPUTF8 (RFC 6531), or the send fails and is retried."""


def build_message(delivery: Delivery, mail_from: str) -> Mail:
    """Plain text with an HTML alternative; every header and the MIME boundary come from the delivery, so a
    resend is the same mail, byte for byte.

    Written line by line: the email package's generator folds every header through `Header`, even a short
    ASCII one, which cost notify 0.5 ms a message, a fifth of its CPU while it sent a backlog (the modern
    API, which parses every header it is handed, cost 3 ms). Only a header that needs it (longer than
    RFC 5322's 78 characters, or not ASCII: RFC 2047) is folded by `Header`. Addresses that are not ASCII
    need RFC 6532's raw UTF-8 headers, which only the modern API writes, so such a message is built with it.
    """
    name_and_sender = parseaddr(mail_from)
    sender = name_and_sender[1]
    if not (sender.isascii() and delivery.recipient.isascii()):
        return Mail(sender, delivery.recipient, _modern_message(delivery, mail_from), smtputf8=True)
    boundary = _boundary(delivery)
    headers = [
        *_headers(delivery, formataddr(name_and_sender, "utf-8")),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    sections = [
        "".join(_header_line(name, value) + CRLF for name, value in headers),
        *(f"--{boundary}{CRLF}{_text_part(content, subtype)}" for content, subtype in ((delivery.text, "plain"), (delivery.html, "html"))),
        f"--{boundary}--{CRLF}",
    ]
    return Mail(sender, delivery.recipient, CRLF.join(sections).encode())


def _header_line(name: str, value: str) -> str:
    line = f"{name}: {value}"
    if value.isascii() and len(line) <= HEADER_LINE_CHARACTERS:
        return line
    folded = Header(value, None if value.isascii() else "utf-8", header_name=name)
    return f"{name}: {folded.encode(linesep=CRLF, maxlinelen=HEADER_LINE_CHARACTERS)}"


def _headers(delivery: Delivery, mail_from: str) -> list[tuple[str, str]]:
    headers = [
        ("Message-ID", delivery.message_id),
        ("Date", format_datetime(delivery.scheduled_for or delivery.created_at)),
        ("From", mail_from),
        ("To", delivery.recipient),
        ("Subject", delivery.subject),
        (TICKET_HEADER, delivery.ticket_id),
    ]
    if delivery.in_reply_to:
        # Every mail about a ticket answers the ticket's thread root, so it threads in mail clients and at intake.
        headers += [("In-Reply-To", delivery.in_reply_to), ("References", delivery.in_reply_to)]
    headers.append(("Auto-Submitted", "auto-generated"))  # RFC 3834: out-of-office replies must not answer it
    for name, value in headers:
        if "\r" in value or "\n" in value:  # written as it is, it would add a header of the sender's choosing
            raise SendFailure(f"the {name} header would span lines", permanent=True)
    return headers


def _boundary(delivery: Delivery) -> str:
    """Derived from the Message-ID, so a resend is the same bytes; derived again, in the unlikely case that a
    part contains it."""
    seed, attempt = delivery.message_id, 0
    while True:
        boundary = "=_" + hashlib.sha256(seed.encode()).hexdigest()[:40]
        if boundary not in delivery.text and boundary not in delivery.html:
            return boundary
        attempt += 1
        seed = f"{delivery.message_id}:{attempt}"


def _text_part(content: str, subtype: str) -> str:
    """UTF-8 as 8bit, readable as it is, as the modern API writes short lines; quoted-printable when a line
    is longer than SMTP allows (RFC 5321: 998 bytes), as a customer's unbroken paragraph can be."""
    encoding = "8bit"
    if any(len(line.encode()) > SMTP_MAX_LINE_BYTES for line in _LINE_END.split(content)):
        encoding, content = "quoted-printable", _QUOTED_PRINTABLE_UTF8.body_encode(content)
    body = _LINE_END.sub(CRLF, content)
    return f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{body}'


def _modern_message(delivery: Delivery, mail_from: str) -> bytes:
    message = EmailMessage()
    for name, value in _headers(delivery, mail_from):
        message[name] = value
    message.set_content(delivery.text)
    message.add_alternative(delivery.html, subtype="html")
    return message.as_bytes(policy=email.policy.SMTPUTF8)


def failure_from(error: Exception) -> SendFailure:
    """What went wrong, in words fit to store and log: the server's reply with every address blanked out."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]  # one recipient per message
    if isinstance(error, aiosmtplib.SMTPResponseException):
        reason = f"SMTP {error.code}: {error.message}"
        permanent = 500 <= error.code < 600  # SMTP's own word: 5xx is permanent, 4xx worth retrying
    else:
        reason = f"{type(error).__name__}: {error}"
        permanent = False
    return SendFailure(_ADDRESS.sub("<address>", reason)[:500], permanent=permanent)


class SmtpMailer:
    """Keeps the connections it opened and sends the next messages over them: a connection per message
    would cost a TCP handshake, EHLO, STARTTLS and a login each time, on both sides.

    Each send has a connection to itself. One that failed is closed, since its state is unknown; one idle
    for IDLE_CONNECTION_SECONDS is closed instead of reused, well before a server gives up on it (RFC 5321
    lets a server wait 5 minutes for the next command).
    """

    def __init__(self, server: SmtpServer, mail_from: str) -> None:
        if "@" not in parseaddr(mail_from)[1]:
            raise ValueError("MAIL_FROM needs an address, e.g. 'Support <support@example.com>'")
        self._server = server
        self._mail_from = mail_from
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def send(self, delivery: Delivery) -> None:
        """Hands the message to the server; raises `SendFailure` unless the server accepted it."""
        mail = build_message(delivery, self._mail_from)
        if (client := self._reusable()) is not None:
            try:
                return await self._send_over(client, mail)
            except SendFailure as failure:
                if not isinstance(failure.__cause__, aiosmtplib.SMTPServerDisconnected):
                    raise
                # The server closed it while it sat idle: once more, on a new connection.
        try:
            client = await self._connect()
        except Exception as error:
            raise failure_from(error) from error
        await self._send_over(client, mail)

    async def _send_over(self, client: aiosmtplib.SMTP, mail: Mail) -> None:
        try:
            await client.sendmail(
                mail.sender, [mail.recipient], mail.data,
                mail_options=["SMTPUTF8"] if mail.smtputf8 else [], timeout=SEND_TIMEOUT_SECONDS,
            )
        except Exception as error:
            client.close()
            raise failure_from(error) from error
        self._idle.append((client, time.monotonic()))

    def _reusable(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client, idle_since = self._idle.pop()
            if client.is_connected and time.monotonic() - idle_since < IDLE_CONNECTION_SECONDS:
                return client
            client.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._server.hostname,
            port=self._server.port,
            username=self._server.username,
            password=self._server.password,
            use_tls=self._server.use_tls,
            start_tls=self._server.start_tls,
            timeout=SEND_TIMEOUT_SECONDS,
        )
        await client.connect()
        return client

"""Sends deliveries as email through the SMTP server that SMTP_URL names (aiosmtplib)."""

import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from services.notify.domain import Delivery, SendFailure

TICKET_HEADER = "X-Switchboard-Ticket"
SEND_TIMEOUT_SECONDS = 30.0
IDLE_CONNECTION_SECONDS = 30.0
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


def build_message(delivery: Delivery, mail_from: str) -> EmailMessage:
    """Plain text with an HTML alternative; every header comes from the delivery, so a resend is the same mail."""
    message = EmailMessage()
    message["Message-ID"] = delivery.message_id
    message["Date"] = format_datetime(delivery.scheduled_for or delivery.created_at)
    message["From"] = mail_from
    message["To"] = delivery.recipient
    message["Subject"] = delivery.subject
    message[TICKET_HEADER] = delivery.ticket_id
    if delivery.in_reply_to:
        # Every mail about a ticket answers the ticket's thread root, so it threads in mail clients and at intake.
        message["In-Reply-To"] = delivery.in_reply_to
        message["References"] = delivery.in_reply_to
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office replies must not answer it
    message.set_content(delivery.text)
    message.add_alternative(delivery.html, subtype="html")
    return message


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
        message = build_message(delivery, self._mail_from)
        if (client := self._reusable()) is not None:
            try:
                return await self._send_over(client, message)
            except SendFailure as failure:
                if not isinstance(failure.__cause__, aiosmtplib.SMTPServerDisconnected):
                    raise
                # The server closed it while it sat idle: once more, on a new connection.
        try:
            client = await self._connect()
        except Exception as error:
            raise failure_from(error) from error
        await self._send_over(client, message)

    async def _send_over(self, client: aiosmtplib.SMTP, message: EmailMessage) -> None:
        try:
            await client.send_message(message, timeout=SEND_TIMEOUT_SECONDS)
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

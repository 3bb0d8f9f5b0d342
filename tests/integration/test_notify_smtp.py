"""Notify's mailer against a real aiosmtpd server that requires STARTTLS and authentication.

The server's certificate is self-signed for 127.0.0.1 and trusted through `SSL_CERT_FILE`, so the
mailer verifies it exactly as it verifies a real relay's.
"""

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.notify.domain import Delivery, DeliveryChannel, SendFailure
from services.notify.mailer import SmtpMailer, parse_smtp_url
from shared.launcher.servers import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate"),
]

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DELIVERY = Delivery(
    id="e1:customer:acknowledgement", ticket_id="TKT-1", kind="acknowledgement", channel=DeliveryChannel.EMAIL,
    recipient="ann@example.com", locale="en", subject="[TKT-1] We received your request", text="Thanks.\n",
    html="<p>Thanks.</p>\n", message_id="<abc@switchboard.local>", in_reply_to="<TKT-1@switchboard.local>",
    correlation_id="c", causation_id="e1", next_attempt_at=NOW, created_at=NOW,
)


class Relay:
    """Keeps each accepted message with the login and whether the session was encrypted."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, bool, object]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.accepted.append((session.login_data.decode(), session.ssl is not None, message))
        return "250 Message accepted"


def authenticate(server, session, envelope, mechanism, auth_data):
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"notify", b"s3cret")
    return AuthResult(success=good, handled=False, auth_data=auth_data if good else None)  # not handled: answer 535


@pytest.fixture
def relay(tmp_path, monkeypatch):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler, port = Relay(), free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        auth_required=True, auth_require_tls=True, authenticator=authenticate,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.mark.parametrize("option", ["?starttls=true", ""])
async def test_mail_goes_over_starttls_with_the_credentials_of_smtp_url(relay, option):
    handler, port = relay
    mailer = SmtpMailer(parse_smtp_url(f"smtp://notify:s3cret@127.0.0.1:{port}{option}"), "Support <support@example.com>")

    await mailer.send(DELIVERY)

    [(login, encrypted, message)] = handler.accepted
    assert (login, encrypted) == ("notify", True)
    assert message["Message-ID"] == DELIVERY.message_id and message["X-Switchboard-Ticket"] == "TKT-1"


async def test_a_wrong_password_is_refused_and_not_retried(relay):
    handler, port = relay
    mailer = SmtpMailer(parse_smtp_url(f"smtp://notify:wrong@127.0.0.1:{port}?starttls=true"), "s@example.com")

    with pytest.raises(SendFailure) as failed:
        await mailer.send(DELIVERY)

    assert failed.value.reason.startswith("SMTP 535") and failed.value.permanent is True
    assert handler.accepted == []


async def test_starttls_turned_off_never_sends_the_password_in_clear(relay):
    handler, port = relay
    mailer = SmtpMailer(parse_smtp_url(f"smtp://notify:s3cret@127.0.0.1:{port}?starttls=false"), "s@example.com")

    with pytest.raises(SendFailure) as failed:
        await mailer.send(DELIVERY)

    assert failed.value.permanent is False
    assert handler.accepted == []


async def test_messages_share_a_connection_and_a_connection_the_server_closed_is_replaced(relay):
    handler, port = relay
    mailer = SmtpMailer(parse_smtp_url(f"smtp://notify:s3cret@127.0.0.1:{port}"), "Support <support@example.com>")
    sessions: list[object] = []
    accept = handler.handle_DATA

    async def handle_data(server, session, envelope):
        sessions.append((server, session))
        return await accept(server, session, envelope)

    handler.handle_DATA = handle_data
    first, second, third = (DELIVERY.model_copy(update={"message_id": f"<m{n}@switchboard.local>"}) for n in range(3))

    await mailer.send(first)
    await mailer.send(second)
    assert sessions[0][1] is sessions[1][1], "one login, one TLS handshake, for both messages"

    server = sessions[1][0]  # the server hangs up on a connection it thinks idle too long
    server.loop.call_soon_threadsafe(server.transport.close)
    while server.transport is not None and not server.transport.is_closing():
        await asyncio.sleep(0.01)
    await mailer.send(third)

    assert [message["Message-ID"] for *_, message in handler.accepted] == [
        "<m0@switchboard.local>", "<m1@switchboard.local>", "<m2@switchboard.local>"
    ]
    assert sessions[2][1] is not sessions[0][1]

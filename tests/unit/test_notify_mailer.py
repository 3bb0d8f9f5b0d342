"""Notify's SMTP adapter without a server: SMTP_URL parsing, the message built, and how failures are judged."""

from datetime import UTC, datetime

import aiosmtplib
import pytest

from services.notify.domain import Delivery, DeliveryChannel, DeliveryKind
from services.notify.mailer import SmtpServer, build_message, failure_from, parse_smtp_url

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("smtp://127.0.0.1:2525", SmtpServer("127.0.0.1", 2525)),
        ("smtp://mail.example.com", SmtpServer("mail.example.com", 25)),
        ("smtp://mail.example.com:587?starttls=true", SmtpServer("mail.example.com", 587, start_tls=True)),
        ("smtp://mail.example.com:25?starttls=false", SmtpServer("mail.example.com", 25, start_tls=False)),
        ("smtps://mail.example.com", SmtpServer("mail.example.com", 465, use_tls=True, start_tls=False)),
        (
            "smtps://ann%40example.com:p%40ss%3Aw0rd@mail.example.com:465",
            SmtpServer("mail.example.com", 465, use_tls=True, start_tls=False, username="ann@example.com", password="p@ss:w0rd"),
        ),
    ],
)
def test_smtp_url_names_the_server_tls_and_credentials(url, server):
    assert parse_smtp_url(url) == server


def test_without_a_starttls_option_starttls_is_used_when_the_server_offers_it():
    assert parse_smtp_url("smtp://user:secret@mail.example.com:587").start_tls is None


def test_the_password_is_kept_out_of_the_repr():
    assert "secret" not in repr(parse_smtp_url("smtp://user:secret@mail.example.com:25"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example.com", "smtp:// or smtps://"),
        ("smtp://", "no host"),
        ("smtp://user:secret@mail.example.com:port", "invalid port"),
        ("smtp://mail.example.com:25?tls=yes", "unknown options: tls"),
        ("smtp://mail.example.com:25?starttls=maybe", "true or false"),
        ("smtps://mail.example.com?starttls=true", "smtps://"),
        ("smtps://mail.example.com?starttls=false", "smtps://"),
    ],
)
def test_a_bad_smtp_url_is_refused_without_quoting_it(url, problem):
    with pytest.raises(ValueError, match=problem) as refused:
        parse_smtp_url(url)
    assert "secret" not in str(refused.value)


DELIVERY = Delivery(
    id="0b7e…:customer:acknowledgement",
    ticket_id="TKT-19ab3c4d5e6f-8f2a1c",
    kind=DeliveryKind.ACKNOWLEDGEMENT,
    channel=DeliveryChannel.EMAIL,
    recipient="ann@example.com",
    locale="en",
    subject="[TKT-19ab3c4d5e6f-8f2a1c] We received your request: Refund",
    text="Your ticket reference is TKT-19ab3c4d5e6f-8f2a1c.\n",
    html="<p>Your ticket reference is <strong>TKT-19ab3c4d5e6f-8f2a1c</strong>.</p>\n",
    message_id="<0123456789abcdef0123456789abcdef@switchboard.local>",
    in_reply_to="<TKT-19ab3c4d5e6f-8f2a1c@switchboard.local>",
    correlation_id="c",
    causation_id="e",
    next_attempt_at=NOW,
    created_at=NOW,
)


def test_the_message_has_plain_text_an_html_alternative_and_the_ticket_header():
    message = build_message(DELIVERY, "Switchboard Support <support@switchboard.local>")

    assert message["Message-ID"] == DELIVERY.message_id
    assert message["X-Switchboard-Ticket"] == "TKT-19ab3c4d5e6f-8f2a1c"
    assert (message["To"], message["Subject"]) == ("ann@example.com", DELIVERY.subject)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content() == DELIVERY.text


def test_the_message_threads_on_the_ticket():
    message = build_message(DELIVERY, "Switchboard Support <support@switchboard.local>")

    assert message["In-Reply-To"] == message["References"] == "<TKT-19ab3c4d5e6f-8f2a1c@switchboard.local>"
    assert "[TKT-19ab3c4d5e6f-8f2a1c]" in message["Subject"]


def test_a_resend_is_the_same_message_with_the_same_message_id_and_date():
    mail_from = "Switchboard Support <support@switchboard.local>"

    first, again = build_message(DELIVERY, mail_from), build_message(DELIVERY, mail_from)

    assert first.items() == again.items()
    assert first["Date"] == "Mon, 02 Mar 2026 09:30:00 +0000"
    assert first.get_body(("html",)).get_content() == again.get_body(("html",)).get_content()


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.c")]), True),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "a@b.c")]), False),
        (aiosmtplib.SMTPDataError(554, "message refused"), True),
        (aiosmtplib.SMTPDataError(451, "local error"), False),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), True),
        (aiosmtplib.SMTPSenderRefused(553, "sender not allowed", "s@x.y"), True),
        (aiosmtplib.SMTPAuthenticationError(454, "temporary authentication failure"), False),
        (aiosmtplib.SMTPConnectError("Error connecting to mail.example.com on port 25"), False),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), False),
        (ConnectionRefusedError(111, "Connection refused"), False),
    ],
)
def test_an_smtp_5xx_is_permanent_and_everything_else_is_retried(error, permanent):
    assert failure_from(error).permanent is permanent


def test_a_failure_reason_keeps_the_reply_but_never_an_address():
    refused = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 <ann@example.com>: Recipient address rejected", "ann@example.com")

    failure = failure_from(aiosmtplib.SMTPRecipientsRefused([refused]))

    assert "ann@example.com" not in failure.reason
    assert failure.reason == "SMTP 550: 5.1.1 <<address>>: Recipient address rejected"

"""Notify's SMTP adapter without a server: SMTP_URL parsing, the message built, and how failures are judged."""

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import aiosmtplib
import pytest

from services.notify.domain import Delivery, DeliveryChannel, DeliveryKind, SendFailure
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


MAIL_FROM = "Switchboard Support <support@switchboard.local>"


def received(delivery: Delivery, mail_from: str = MAIL_FROM) -> EmailMessage:
    """The message as the mail server gets it, read back as a mail client reads it."""
    return message_from_bytes(build_message(delivery, mail_from).data, policy=policy.default)


def test_the_message_has_plain_text_an_html_alternative_and_the_ticket_header():
    mail = build_message(DELIVERY, MAIL_FROM)
    message = received(DELIVERY)

    assert (mail.sender, mail.recipient, mail.smtputf8) == ("support@switchboard.local", "ann@example.com", False)
    assert message["Message-ID"] == DELIVERY.message_id
    assert message["X-Switchboard-Ticket"] == "TKT-19ab3c4d5e6f-8f2a1c"
    assert (message["From"], message["To"], message["Subject"]) == (MAIL_FROM, "ann@example.com", DELIVERY.subject)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content() == DELIVERY.text.replace("\n", "\r\n")
    assert message.get_body(("html",)).get_content() == DELIVERY.html.replace("\n", "\r\n")
    assert b"\r\n" in mail.data and b"\n" not in mail.data.replace(b"\r\n", b""), "SMTP's line ends throughout"


def test_the_message_threads_on_the_ticket():
    message = received(DELIVERY)

    assert message["In-Reply-To"] == message["References"] == "<TKT-19ab3c4d5e6f-8f2a1c@switchboard.local>"
    assert "[TKT-19ab3c4d5e6f-8f2a1c]" in message["Subject"]


def test_a_resend_is_the_same_message_byte_for_byte():
    first, again = build_message(DELIVERY, MAIL_FROM), build_message(DELIVERY, MAIL_FROM)

    assert first == again
    assert received(DELIVERY)["Date"] == "Mon, 02 Mar 2026 09:30:00 +0000"


def test_german_text_reads_back_as_written_and_a_long_line_is_kept_within_smtps_limit():
    paragraph = "Sehr geehrte Damen und Herren, " * 50  # 1,550 bytes on one line
    delivery = DELIVERY.model_copy(update={
        "subject": "[TKT-1] Wir haben Ihre Anfrage erhalten: Rückerstattung für Bestellung 4711",
        "text": f"Hallo Änne,\n{paragraph}\nGrüße\n",
    })

    mail = build_message(delivery, "Kundendienst Zürich <support@example.com>")
    message = received(delivery, "Kundendienst Zürich <support@example.com>")

    assert message["Subject"] == delivery.subject
    assert message["From"] == "Kundendienst Zürich <support@example.com>"
    assert message.get_body(("plain",)).get_content() == delivery.text.replace("\n", "\r\n")
    assert max(len(line) for line in mail.data.split(b"\r\n")) <= 998


def test_a_long_subject_is_folded_and_reads_back_whole():
    delivery = DELIVERY.model_copy(update={"subject": "[TKT-1] " + "We received your request about the invoice " * 4})

    mail = build_message(delivery, MAIL_FROM)

    assert received(delivery)["Subject"] == delivery.subject
    assert max(len(line) for line in mail.data.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 78


def test_text_reads_back_exactly_whatever_its_line_ends_and_a_part_never_contains_the_boundary():
    first = build_message(DELIVERY, MAIL_FROM).data
    boundary = first.split(b'boundary="')[1].split(b'"')[0].decode()
    delivery = DELIVERY.model_copy(update={"text": f"quoting\n--{boundary}\rand a line\r\nwith no end", "html": "<p>x</p>"})

    message = received(delivery)

    assert message.get_body(("plain",)).get_content() == f"quoting\r\n--{boundary}\r\nand a line\r\nwith no end"
    assert message.get_body(("html",)).get_content() == "<p>x</p>"


def test_an_address_that_is_not_ascii_is_written_as_utf8_and_asks_for_smtputf8():
    delivery = DELIVERY.model_copy(update={"recipient": "jörg@bücher.example"})

    mail = build_message(delivery, MAIL_FROM)

    assert mail.smtputf8 and mail.recipient == "jörg@bücher.example"
    assert "To: jörg@bücher.example".encode() in mail.data
    assert received(delivery).get_body(("plain",)).get_content() == DELIVERY.text.replace("\n", "\r\n")


def test_a_header_value_that_would_span_lines_is_refused_for_good():
    delivery = DELIVERY.model_copy(update={"recipient": "ann@example.com\r\nBcc: eve@example.com"})

    with pytest.raises(SendFailure) as refused:
        build_message(delivery, MAIL_FROM)

    assert refused.value.permanent and "To" in str(refused.value)


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

"""Inbound email, pure parts: parsing, threading references, quote stripping."""

import pytest

from services.intake.email_inbound import InvalidEmail, JsonEmail, html_to_text, parse_json, parse_raw, strip_quoted

RAW_REPLY = b"""From: Ann Lee <ann@example.com>
To: support@switchboard.local
Subject: Re: [TKT-19ab3c4d5e6-8f2a1c] Refund for order 1042
Message-ID: <reply-1@mail.example.com>
In-Reply-To: <0123abcd@switchboard.local>
References: <TKT-19ab3c4d5e6-8f2a1c@switchboard.local> <0123abcd@switchboard.local>
Content-Type: text/plain; charset=utf-8

Still no refund, please check again.

On Tue, 24 Nov 2026 at 10:00, Switchboard Support <support@switchboard.local> wrote:
> We received your request.
> Ticket TKT-19ab3c4d5e6-8f2a1c
"""


def test_a_raw_reply_is_parsed_with_its_thread_and_without_the_quoted_history():
    email = parse_raw(RAW_REPLY)

    assert (email.from_email, email.from_name) == ("ann@example.com", "Ann Lee")
    assert email.message_id == "<reply-1@mail.example.com>"
    assert email.body == "Still no refund, please check again."
    assert email.replied_to == ["<0123abcd@switchboard.local>", "<TKT-19ab3c4d5e6-8f2a1c@switchboard.local>"]
    assert email.ticket_reference() == "TKT-19ab3c4d5e6-8f2a1c"


def test_the_subject_reference_is_the_fallback_for_threading():
    email = parse_json(JsonEmail.model_validate(
        {"from": "bo@example.com", "subject": "AW: [TKT-19ab3c4d5e6-8f2a1c] Hilfe", "text": "Danke!"}))
    assert email.replied_to == [] and email.ticket_reference() == "TKT-19ab3c4d5e6-8f2a1c"


def test_the_json_form_takes_html_when_there_is_no_text():
    email = parse_json(JsonEmail.model_validate({
        "from": "Cy <cy@example.com>", "subject": "Broken", "message_id": "<m-9@example.com>",
        "html": "<p>It is <b>broken</b> &amp; slow</p><blockquote>old stuff</blockquote>",
    }))
    assert (email.from_email, email.from_name, email.message_id) == ("cy@example.com", "Cy", "<m-9@example.com>")
    assert email.body == "It is broken & slow"
    assert email.ticket_reference() is None


def test_an_email_without_a_sender_or_any_text_is_refused():
    with pytest.raises(InvalidEmail, match="From"):
        parse_raw(b"Subject: hi\r\n\r\nhello")
    with pytest.raises(InvalidEmail, match="neither text nor a subject"):
        parse_json(JsonEmail.model_validate({"from": "cy@example.com", "text": "  "}))


@pytest.mark.parametrize(
    "quoted",
    [
        "On Mon, 23 Nov 2026, Support <s@x.com> wrote:\n> old",
        "On Mon, 23 Nov 2026 at 10:00, Support\n<s@x.com> wrote:\n> old",
        "Am 23.11.2026 um 10:00 schrieb Support <s@x.com>:\n> alt",
        "-----Original Message-----\nFrom: Support\nSent: Monday",
        "From: Support <s@x.com>\nSent: Monday\nSubject: Re: x\n\nold text",
        "-- \nAnn Lee\nACME Inc.",
        "Sent from my iPhone",
    ],
)
def test_quoted_history_and_signatures_are_stripped(quoted):
    assert strip_quoted(f"Thanks, that fixed it.\n\n{quoted}") == "Thanks, that fixed it."


def test_inline_quote_lines_are_dropped_but_the_answers_between_them_kept():
    assert strip_quoted("> Which order?\n1042\n> Which day?\nMonday") == "1042\nMonday"


def test_html_to_text_keeps_lines():
    assert html_to_text("Hi<br>there<div>again</div>") == "Hi\nthere\nagain"

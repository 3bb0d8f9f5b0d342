"""Notify's pure rules: what is owed for a new ticket, its identity, and when a failed send is tried again."""

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.domain import (
    DeliveryKind,
    DeliveryState,
    RenderedEmail,
    RetryPolicy,
    SendFailure,
    acknowledgement,
    after_failure,
    message_id_for,
    sent,
)
from services.notify.templates import Templates
from shared.envelope import new_event
from shared.events import Channel, Customer, Priority, TicketCreated

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TEMPLATES = Templates()


def ticket_created(customer: Customer, subject: str = "Refund") -> object:
    created = TicketCreated(
        ticket_id="TKT-19ab3c4d5e6f-8f2a1c",
        channel=Channel.WEB,
        customer=customer,
        subject=subject,
        priority=Priority.NORMAL,
        required_skills=[],
        created_at=NOW,
    )
    return new_event(created, source="switchboard/intake", subject=created.ticket_id)


def render_stub(kind, locale, context) -> RenderedEmail:
    return RenderedEmail(subject=f"{kind}:{locale}", text=str(context), html="<p></p>")


ANN = Customer(id="c1", email="ann@example.com", name="Ann")


def test_a_customer_with_an_email_is_owed_one_pending_acknowledgement_due_now():
    event = ticket_created(ANN)

    delivery = acknowledgement(event, render=render_stub, now=NOW)

    assert delivery.id == f"{event.id}:customer:acknowledgement"
    assert delivery.kind is DeliveryKind.ACKNOWLEDGEMENT
    assert (delivery.ticket_id, delivery.recipient) == ("TKT-19ab3c4d5e6f-8f2a1c", "ann@example.com")
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (DeliveryState.PENDING, 0, NOW)
    assert (delivery.correlation_id, delivery.causation_id) == (event.correlationid, str(event.id))


def test_a_customer_without_an_email_is_owed_nothing():
    assert acknowledgement(ticket_created(Customer(id="c1")), render=render_stub, now=NOW) is None


def test_the_same_event_always_yields_the_same_delivery_id_and_message_id():
    event = ticket_created(ANN)

    first = acknowledgement(event, render=render_stub, now=NOW)
    again = acknowledgement(event, render=render_stub, now=NOW + timedelta(hours=1))
    other = acknowledgement(ticket_created(ANN), render=render_stub, now=NOW)

    assert (again.id, again.message_id) == (first.id, first.message_id)
    assert other.message_id != first.message_id
    assert first.message_id == message_id_for(first.id)
    assert first.message_id.startswith("<") and first.message_id.endswith("@switchboard.local>")
    assert len(first.message_id.split("@")[0]) == 1 + 32


def test_the_acknowledgement_carries_the_ticket_id_in_subject_text_and_html():
    delivery = acknowledgement(ticket_created(ANN), render=TEMPLATES.render, now=NOW)

    assert delivery.subject == "[TKT-19ab3c4d5e6f-8f2a1c] We received your request: Refund"
    assert "TKT-19ab3c4d5e6f-8f2a1c" in delivery.text
    assert "TKT-19ab3c4d5e6f-8f2a1c" in delivery.html
    assert "Hello Ann," in delivery.text


def test_the_html_escapes_what_the_customer_wrote_and_the_subject_stays_one_line():
    delivery = acknowledgement(
        ticket_created(ANN, subject="<script>alert(1)</script>\r\nBcc: x@example.com"), render=TEMPLATES.render, now=NOW
    )

    assert "<script>" not in delivery.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in delivery.html
    assert "\n" not in delivery.subject and "\r" not in delivery.subject
    assert "<script>alert(1)</script>" in delivery.text  # plain text shows what they typed


def test_a_customer_without_a_name_is_greeted_without_one():
    delivery = acknowledgement(
        ticket_created(Customer(email="bo@example.com")), render=TEMPLATES.render, now=NOW
    )

    assert delivery.text.startswith("Hello,")
    assert "Hello,</p>" in delivery.html


POLICY = RetryPolicy(max_attempts=8, base=timedelta(seconds=1), cap=timedelta(seconds=60))


@pytest.mark.parametrize("attempt", range(1, 12))
def test_retry_delays_double_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half(attempt):
    ceiling = min(60.0, 2.0 ** (attempt - 1))

    lowest = POLICY.delay(attempt, jitter=0.0).total_seconds()
    highest = POLICY.delay(attempt, jitter=0.999999).total_seconds()

    assert lowest == pytest.approx(ceiling / 2)
    assert ceiling / 2 <= highest <= ceiling


def test_retry_delays_stay_capped_however_many_attempts():
    assert POLICY.delay(10_000, jitter=0.999999) <= timedelta(seconds=60)


def claimed(attempts: int):
    return acknowledgement(ticket_created(ANN), render=render_stub, now=NOW).model_copy(update={"attempts": attempts})


def test_a_temporary_failure_is_retried_later_and_remembers_why():
    delivery = after_failure(
        claimed(1), SendFailure("SMTP 421: try later", permanent=False), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at == NOW + timedelta(seconds=0.5)
    assert delivery.last_error == "SMTP 421: try later"


def test_a_permanent_failure_fails_at_once():
    delivery = after_failure(
        claimed(1), SendFailure("SMTP 550: no such mailbox", permanent=True), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.state is DeliveryState.FAILED
    assert delivery.last_error == "SMTP 550: no such mailbox"


def test_the_last_allowed_attempt_fails_the_delivery():
    delivery = after_failure(
        claimed(8), SendFailure("ConnectionRefusedError", permanent=False), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.state is DeliveryState.FAILED


def test_sent_records_when():
    delivery = sent(claimed(1), NOW)

    assert (delivery.state, delivery.sent_at) == (DeliveryState.SENT, NOW)

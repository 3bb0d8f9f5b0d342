"""Webhooks and SMS: signed requests, and how each HTTP answer is judged."""

import hashlib
import hmac
import json
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from services.notify.domain import Delivery, DeliveryChannel, SendFailure
from services.notify.webhooks import (
    SignedPoster,
    SmsSender,
    WebhookSender,
    failure_for_status,
    retry_after_seconds,
    webhook_body,
)

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DELIVERY = Delivery(
    id="e1:team:sla_breached", ticket_id="TKT-1", kind="sla_breached", channel=DeliveryChannel.WEBHOOK,
    recipient="http://hooks.example/team", locale="en", subject="SLA breached", text="Ticket TKT-1 missed it.",
    html="", message_id="<x@switchboard.local>", correlation_id="c", causation_id="e1", next_attempt_at=NOW, created_at=NOW,
)


@pytest.mark.parametrize(
    ("status", "retry_after", "permanent", "wait"),
    [
        (500, None, False, None),
        (503, "7", False, 7.0),
        (429, "12", False, 12.0),
        (429, None, False, None),
        (408, None, False, None),
        (404, None, True, None),
        (400, None, True, None),
        (410, "5", True, None),
    ],
)
def test_http_answers_are_judged_retryable_or_permanent(status, retry_after, permanent, wait):
    failure = failure_for_status(status, retry_after, now=0)

    assert (failure.permanent, failure.retry_after) == (permanent, wait)
    assert f"HTTP {status}" in failure.reason


def test_2xx_is_success():
    assert failure_for_status(204, None, now=0) is None


def test_retry_after_as_an_http_date():
    now = NOW.timestamp()
    assert retry_after_seconds(format_datetime(datetime(2026, 3, 2, 9, 30, 30, tzinfo=UTC), usegmt=True), now) == 30
    assert retry_after_seconds("soon", now) is None


async def test_a_webhook_is_slack_compatible_and_signed_over_timestamp_and_body():
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    poster = SignedPoster("k3y", httpx.AsyncClient(transport=httpx.MockTransport(receive)))
    await WebhookSender(poster).send(DELIVERY)

    [request] = seen
    body = request.content
    timestamp = request.headers["X-Switchboard-Timestamp"]
    expected = hmac.new(b"k3y", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert request.headers["X-Switchboard-Signature"] == f"sha256={expected}"
    assert request.headers["X-Switchboard-Notification-Id"] == request.headers["Idempotency-Key"] == DELIVERY.id
    assert json.loads(body)["text"] == "SLA breached\nTicket TKT-1 missed it."


def test_the_webhook_text_is_escaped_so_slack_shows_what_the_customer_typed():
    hostile = DELIVERY.model_copy(update={"subject": "SLA breached: <!channel> & <https://evil.example|pay here>"})

    text = json.loads(webhook_body(hostile))["text"]

    assert text.startswith("SLA breached: &lt;!channel&gt; &amp; &lt;https://evil.example|pay here&gt;")
    assert "<" not in text and ">" not in text


async def test_a_429_raises_a_retryable_failure_with_its_retry_after():
    poster = SignedPoster("k", httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "3"}))))

    with pytest.raises(SendFailure) as failed:
        await WebhookSender(poster).send(DELIVERY)

    assert (failed.value.permanent, failed.value.retry_after) == (False, 3.0)


async def test_an_unreachable_receiver_is_retried():
    def refuse(request):
        raise httpx.ConnectError("refused")

    poster = SignedPoster("k", httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    with pytest.raises(SendFailure) as failed:
        await WebhookSender(poster).send(DELIVERY)
    assert failed.value.permanent is False


async def test_no_signing_key_means_nothing_is_sent_unsigned():
    poster = SignedPoster("", httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))))
    with pytest.raises(SendFailure, match="WEBHOOK_SIGNING_KEY"):
        await WebhookSender(poster).send(DELIVERY)


async def test_sms_goes_to_the_provider_with_the_number():
    seen = []
    poster = SignedPoster("k", httpx.AsyncClient(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(202))))

    await SmsSender(poster, "http://sms.example/send").send(
        DELIVERY.model_copy(update={"channel": DeliveryChannel.SMS, "recipient": "+4930123456"})
    )

    assert str(seen[0].url) == "http://sms.example/send"
    assert json.loads(seen[0].content)["to"] == "+4930123456"

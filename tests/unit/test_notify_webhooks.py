"""Webhooks and SMS: signed requests, and how each HTTP answer is judged."""

import hashlib
import hmac
import json
from datetime import UTC, datetime
from email.utils import format_datetime
from ipaddress import ip_address

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
from shared.outbound import OutboundPolicy

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DELIVERY = Delivery(
    id="e1:team:sla_breached", ticket_id="TKT-1", kind="sla_breached", channel=DeliveryChannel.WEBHOOK,
    recipient="http://hooks.example/team", locale="en", subject="SLA breached", text="Ticket TKT-1 missed it.",
    html="", message_id="<x@switchboard.local>", correlation_id="c", causation_id="e1", next_attempt_at=NOW, created_at=NOW,
)
PUBLIC = ip_address("93.184.215.14")


def poster_to(receive, key: str = "k", resolve=lambda host, port: [PUBLIC]) -> SignedPoster:
    """A poster whose requests go to `receive`, with DNS answering `resolve`."""
    return SignedPoster(key, OutboundPolicy(resolve=resolve), httpx.AsyncClient(transport=httpx.MockTransport(receive)))


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

    poster = poster_to(receive, key="k3y")
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
    poster = poster_to(lambda r: httpx.Response(429, headers={"Retry-After": "3"}))

    with pytest.raises(SendFailure) as failed:
        await WebhookSender(poster).send(DELIVERY)

    assert (failed.value.permanent, failed.value.retry_after) == (False, 3.0)


async def test_an_unreachable_receiver_is_retried():
    def refuse(request):
        raise httpx.ConnectError("refused")

    poster = poster_to(refuse)
    with pytest.raises(SendFailure) as failed:
        await WebhookSender(poster).send(DELIVERY)
    assert failed.value.permanent is False


async def test_no_signing_key_means_nothing_is_sent_unsigned():
    poster = poster_to(lambda r: httpx.Response(200), key="")
    with pytest.raises(SendFailure, match="WEBHOOK_SIGNING_KEY"):
        await WebhookSender(poster).send(DELIVERY)


async def test_sms_goes_to_the_provider_with_the_number():
    seen = []
    poster = poster_to(lambda r: seen.append(r) or httpx.Response(202))

    await SmsSender(poster, "http://sms.example/send").send(
        DELIVERY.model_copy(update={"channel": DeliveryChannel.SMS, "recipient": "+4930123456"})
    )

    assert (seen[0].url.host, seen[0].url.path, seen[0].headers["Host"]) == (str(PUBLIC), "/send", "sms.example")
    assert json.loads(seen[0].content)["to"] == "+4930123456"


async def test_a_name_that_resolves_internal_at_send_time_is_refused_for_good_and_nothing_is_sent():
    """DNS rebinding: the URL resolved to a public address when it was saved; now it names the metadata service."""
    seen = []
    poster = poster_to(lambda r: seen.append(r) or httpx.Response(200), resolve=lambda host, port: [ip_address("169.254.169.254")])

    with pytest.raises(SendFailure) as failed:
        await WebhookSender(poster).send(DELIVERY)

    assert failed.value.permanent is True and seen == []
    assert failed.value.reason == (
        "URL host hooks.example resolves to 169.254.169.254, a link-local address; set OUTBOUND_URL_ALLOWLIST to permit it"
    )


async def test_the_request_goes_to_the_address_that_was_checked_under_the_hosts_own_name():
    answers = iter([[PUBLIC], [ip_address("127.0.0.1")]])  # a second lookup would answer internal
    seen = []
    poster = poster_to(lambda r: seen.append(r) or httpx.Response(200), resolve=lambda host, port: next(answers))

    await WebhookSender(poster).send(DELIVERY.model_copy(update={"recipient": "https://hooks.example/team"}))

    [request] = seen
    assert (str(request.url), request.headers["Host"]) == (f"https://{PUBLIC}/team", "hooks.example")
    assert request.extensions["sni_hostname"] == "hooks.example"  # TLS checks the certificate of hooks.example

"""Webhook and SMS channels: signed HTTP POSTs (httpx).

Every request carries `X-Switchboard-Timestamp` (unix seconds) and `X-Switchboard-Signature:
sha256=<hex HMAC-SHA256(WEBHOOK_SIGNING_KEY, "{timestamp}.{body}")>`, and
`X-Switchboard-Notification-Id` and `Idempotency-Key` (both the delivery's deduplication key, the same on
every retry and after a restart) so a receiver can drop a repeat.
The webhook body is Slack-compatible (`text`, escaped as Slack asks, plus fields Slack ignores); SMS goes to a generic
provider webhook (`SMS_PROVIDER_URL`) as `{"to", "text", ...}`.

Every URL passes the outbound policy (`shared/outbound.py`) at each send, and the request goes to the
address it checked: a URL that reaches an internal address is a permanent failure saying why.

2xx is sent. 429 and 503 are retried no sooner than their `Retry-After`; 408, 425 and other 5xx are
retried; any other 4xx is permanent (the receiver refuses this message).
"""

import json
import time
from email.utils import parsedate_to_datetime

import httpx

from services.notify.domain import Delivery, SendFailure
from shared.outbound import HostUnresolved, OutboundPolicy, OutboundRefused
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature

TIMEOUT_SECONDS = 15.0
NOTIFICATION_HEADER = "X-Switchboard-Notification-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_TRANSIENT_4XX = {408, 425, 429}


def slack_escaped(text: str) -> str:
    """Slack reads `<...>` as a control sequence (`<!channel>` pings everyone, `<url|label>` is a link):
    a customer's subject must show as typed, so `&`, `<` and `>` are escaped the way Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(delivery: Delivery) -> bytes:
    """Deterministic per delivery: a resend carries the same body."""
    text = slack_escaped(f"{delivery.subject}\n{delivery.text}".strip())
    return json.dumps(
        {
            "text": text,
            "notification_id": delivery.id,
            "kind": delivery.kind,
            "ticket_id": delivery.ticket_id,
            "recipient_id": delivery.recipient_id,
        },
        sort_keys=True,
    ).encode()


def sms_body(delivery: Delivery) -> bytes:
    return json.dumps(
        {"to": delivery.recipient, "text": delivery.subject[:300], "notification_id": delivery.id}, sort_keys=True
    ).encode()


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def failure_for_status(status: int, retry_after: str | None, now: float) -> SendFailure | None:
    if 200 <= status < 300:
        return None
    reason = f"HTTP {status}"
    if status in _TRANSIENT_4XX or status >= 500:
        wait = retry_after_seconds(retry_after, now) if status in (429, 503) else None
        return SendFailure(reason + (f", Retry-After {wait:g}s" if wait is not None else ""), permanent=False, retry_after=wait)
    return SendFailure(reason, permanent=True)


class SignedPoster:
    def __init__(
        self, signing_key: str, outbound: OutboundPolicy, client: httpx.AsyncClient | None = None
    ) -> None:
        self._key = signing_key
        self._outbound = outbound
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)

    async def post(self, url: str, body: bytes, notification_id: str) -> None:
        if not self._key:
            raise SendFailure("WEBHOOK_SIGNING_KEY is not set: refusing to send unsigned webhooks", permanent=False)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: webhook_signature(self._key, timestamp, body),
            NOTIFICATION_HEADER: notification_id,
            IDEMPOTENCY_HEADER: notification_id,  # the conventional name (IETF httpapi draft) receivers drop repeats on
            "User-Agent": "switchboard-notify/1",
        }
        try:
            destination = await self._outbound.destination(url)
        except OutboundRefused as refused:
            raise SendFailure(str(refused), permanent=True) from refused
        except HostUnresolved as unresolved:
            raise SendFailure(str(unresolved), permanent=False) from unresolved
        try:
            response = await self._client.post(
                destination.url, content=body, headers=headers | destination.headers, extensions=destination.extensions
            )
        except httpx.HTTPError as error:
            raise SendFailure(f"{type(error).__name__}: could not reach the receiver", permanent=False) from error
        failure = failure_for_status(response.status_code, response.headers.get("Retry-After"), time.time())
        if failure is not None:
            raise failure

    async def close(self) -> None:
        await self._client.aclose()


class WebhookSender:
    def __init__(self, poster: SignedPoster) -> None:
        self._poster = poster

    async def send(self, delivery: Delivery) -> None:
        await self._poster.post(delivery.recipient, webhook_body(delivery), delivery.id)


class SmsSender:
    def __init__(self, poster: SignedPoster, provider_url: str) -> None:
        self._poster = poster
        self._provider_url = provider_url

    async def send(self, delivery: Delivery) -> None:
        if not self._provider_url:
            raise SendFailure("SMS_PROVIDER_URL is not set", permanent=True)
        await self._poster.post(self._provider_url, sms_body(delivery), delivery.id)

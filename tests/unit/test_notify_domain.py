"""Notify's pure rules: identities, retries, quiet hours, digests, signatures, addresses."""

import hashlib
import hmac
from datetime import UTC, datetime, time, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.notify.domain import (
    Delivery,
    DeliveryChannel,
    DeliveryState,
    QuietHours,
    RetryPolicy,
    SendFailure,
    address_problem,
    after_failure,
    csat_links,
    delivery_key,
    describe_duration,
    digest_key,
    digest_window,
    message_id_for,
    quiet_hours_end,
    sent,
)
from shared.signing import BadSignature, csat_signature, verify_csat

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def test_the_deduplication_key_and_message_id_are_stable_per_cause_recipient_and_kind():
    key = delivery_key("e1", "customer", "acknowledgement")

    assert key == "e1:customer:acknowledgement"
    assert message_id_for(key) == message_id_for("e1:customer:acknowledgement")
    assert message_id_for(key) != message_id_for("e1:agent:acknowledgement")
    assert message_id_for(key).startswith("<") and message_id_for(key).endswith("@switchboard.local>")
    assert len(message_id_for(key).split("@")[0]) == 1 + 32


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


def claimed(attempts: int) -> Delivery:
    return Delivery(
        id="e1:customer:acknowledgement", ticket_id="TKT-1", kind="acknowledgement", channel=DeliveryChannel.EMAIL,
        recipient="ann@example.com", locale="en", subject="s", text="t", html="h",
        message_id=message_id_for("e1:customer:acknowledgement"), correlation_id="c", causation_id="e1",
        next_attempt_at=NOW, created_at=NOW, attempts=attempts,
    )


def test_a_temporary_failure_is_retried_later_and_remembers_why():
    delivery = after_failure(
        claimed(1), SendFailure("SMTP 421: try later", permanent=False), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at == NOW + timedelta(seconds=0.5)
    assert delivery.last_error == "SMTP 421: try later"


def test_a_retry_after_is_honoured_when_it_is_longer_than_the_backoff():
    delivery = after_failure(
        claimed(1), SendFailure("HTTP 429", permanent=False, retry_after=7), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.next_attempt_at == NOW + timedelta(seconds=7)


def test_a_retry_after_is_capped_so_a_receiver_cannot_park_a_message_for_ever():
    delivery = after_failure(
        claimed(1), SendFailure("HTTP 429", permanent=False, retry_after=10**9), policy=POLICY, now=NOW, jitter=0.0
    )

    assert delivery.next_attempt_at == NOW + POLICY.max_retry_after


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


OVERNIGHT = QuietHours(start=time(22), end=time(7), timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("at", "until"),
    [
        (datetime(2026, 3, 2, 21, 30, tzinfo=UTC), datetime(2026, 3, 3, 6, 0, tzinfo=UTC)),  # 22:30 Berlin
        (datetime(2026, 3, 3, 3, 0, tzinfo=UTC), datetime(2026, 3, 3, 6, 0, tzinfo=UTC)),  # 04:00 Berlin
        (datetime(2026, 3, 3, 6, 0, tzinfo=UTC), None),  # 07:00 Berlin: quiet hours are over
        (datetime(2026, 3, 2, 12, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_overnight_in_the_recipients_timezone(at, until):
    assert quiet_hours_end(at, OVERNIGHT) == until


def test_quiet_hours_within_one_day():
    lunch = QuietHours(start=time(12), end=time(13))

    assert quiet_hours_end(datetime(2026, 3, 2, 12, 15, tzinfo=UTC), lunch) == datetime(2026, 3, 2, 13, tzinfo=UTC)
    assert quiet_hours_end(datetime(2026, 3, 2, 13, 0, tzinfo=UTC), lunch) is None


def test_a_digest_window_ends_at_a_fixed_boundary_and_its_key_hides_the_address():
    number, ends = digest_window(NOW, timedelta(hours=1))

    assert ends == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert digest_window(NOW + timedelta(minutes=29), timedelta(hours=1))[0] == number
    key = digest_key("customer", "ann@example.com", number)
    assert key.startswith("digest:customer:") and "ann" not in key


def test_csat_links_are_signed_the_way_intake_checks_them():
    expires = datetime(2026, 3, 16, tzinfo=UTC)

    links = csat_links("http://intake.example/", "k3y", "TKT-1", expires)

    assert sorted(links) == ["1", "2", "3", "4", "5"]
    url = urlsplit(links["4"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert (url.path, query["score"], query["expires"]) == ("/v1/tickets/TKT-1/csat", "4", str(int(expires.timestamp())))
    expected = hmac.new(b"k3y", f"TKT-1.{query['expires']}".encode(), hashlib.sha256).hexdigest()
    assert query["signature"] == expected == csat_signature("k3y", "TKT-1", int(expires.timestamp()))


def test_intake_accepts_the_links_notify_signs_and_refuses_a_changed_expiry():
    """The contract with intake's CSAT endpoint, checked by the verifier intake uses."""

    expires = datetime(2026, 3, 16, tzinfo=UTC)
    url = urlsplit(csat_links("http://intake.example", "k3y", "TKT-1", expires)["5"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}

    verify_csat("k3y", "TKT-1", int(query["expires"]), query["signature"], now=NOW.timestamp())
    with pytest.raises(BadSignature):
        verify_csat("k3y", "TKT-1", int(query["expires"]) + 86400, query["signature"], now=NOW.timestamp())
    with pytest.raises(BadSignature):
        verify_csat("other-key", "TKT-1", int(query["expires"]), query["signature"], now=NOW.timestamp())


@pytest.mark.parametrize(
    ("channel", "address", "problem"),
    [
        (DeliveryChannel.EMAIL, "ann@example.com", None),
        (DeliveryChannel.EMAIL, "ann@", "invalid email address"),
        (DeliveryChannel.EMAIL, None, "no email address"),
        (DeliveryChannel.WEBHOOK, "https://hooks.example.com/x", None),
        (DeliveryChannel.WEBHOOK, "ftp://hooks.example.com/x", "invalid webhook URL"),
        (DeliveryChannel.SMS, "+4930123456", None),
        (DeliveryChannel.SMS, "030 123456", "invalid phone number"),
    ],
)
def test_addresses_are_checked_per_channel(channel, address, problem):
    found = address_problem(channel, address)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(("seconds", "words"), [(60, "1 minute"), (2700, "45 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"), (3 * 86400, "3 days")])
def test_durations_read_like_a_person_wrote_them(seconds, words):
    assert describe_duration(seconds) == words


@pytest.mark.parametrize(
    ("seconds", "language", "words"),
    [(60, "de", "1 Minute"), (2700, "de", "45 Minuten"), (3600, "de", "1 Stunde"), (8 * 3600, "de", "8 Stunden"),
     (3 * 86400, "de", "3 Tagen"), (8 * 3600, "fr", "8 hours")],
)
def test_a_duration_is_worded_in_the_templates_language_or_else_in_english(seconds, language, words):
    assert describe_duration(seconds, language) == words


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", ""])
def test_quiet_hours_need_a_real_timezone(zone):
    with pytest.raises(ValueError, match="unknown timezone"):
        QuietHours(start=time(22), end=time(7), timezone=zone)

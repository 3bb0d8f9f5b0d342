"""Webhook and survey (CSAT, NPS) signatures: what a sender signs and a receiver checks."""

import hashlib
import hmac

import pytest

from shared.signing import (
    BadSignature,
    csat_signature,
    nps_signature,
    verify_csat,
    verify_nps,
    verify_webhook,
    webhook_signature,
)

KEY = "secret-key"
NOW = 1_800_000_000


def test_a_signed_body_verifies_and_gives_its_digest_as_the_replay_key():
    body = b"From: ann@example.com\r\n\r\nhello"
    digest = verify_webhook(KEY, str(NOW), webhook_signature(KEY, NOW, body), body, now=NOW + 10, tolerance=300)
    assert len(digest) == 64


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "reason"),
    [
        (None, "sha256=00", b"x", "missing"),
        ("soon", webhook_signature(KEY, NOW, b"x"), b"x", "unix seconds"),
        (str(NOW - 301), webhook_signature(KEY, NOW - 301, b"x"), b"x", "more than 300 seconds"),
        (str(NOW), webhook_signature(KEY, NOW, b"x"), b"y", "does not match"),
        (str(NOW), webhook_signature("other-key", NOW, b"x"), b"x", "does not match"),
    ],
)
def test_bad_webhook_signatures_are_refused_saying_why(timestamp, signature, body, reason):
    with pytest.raises(BadSignature, match=reason):
        verify_webhook(KEY, timestamp, signature, body, now=NOW, tolerance=300)


def test_csat_links_verify_until_they_expire():
    signature = csat_signature(KEY, "TKT-1", NOW + 60)

    verify_csat(KEY, "TKT-1", NOW + 60, signature.upper(), now=NOW)
    with pytest.raises(BadSignature, match="expired"):
        verify_csat(KEY, "TKT-1", NOW + 60, signature, now=NOW + 61)
    with pytest.raises(BadSignature, match="not valid"):
        verify_csat(KEY, "TKT-2", NOW + 60, signature, now=NOW)


def test_nps_links_verify_until_they_expire_and_bind_survey_customer_and_ticket():
    signature = nps_signature(KEY, "nps-1", "cust.1", "TKT-1", NOW + 60)

    verify_nps(KEY, "nps-1", "cust.1", "TKT-1", NOW + 60, signature.upper(), now=NOW)
    with pytest.raises(BadSignature, match="expired"):
        verify_nps(KEY, "nps-1", "cust.1", "TKT-1", NOW + 60, signature, now=NOW + 61)
    for survey, customer, ticket in [("nps-2", "cust.1", "TKT-1"), ("nps-1", "cust", "1.TKT-1"), ("nps-1", "cust.1", "TKT-2")]:
        with pytest.raises(BadSignature, match="not valid"):
            verify_nps(KEY, survey, customer, ticket, NOW + 60, signature, now=NOW)


def test_a_csat_signature_never_passes_as_an_nps_one():
    with pytest.raises(BadSignature, match="not valid"):
        verify_nps(KEY, "nps-1", "cust-1", "TKT-1", NOW + 60, csat_signature(KEY, "TKT-1", NOW + 60), now=NOW)


def test_webhook_signature_covers_timestamp_and_body():
    body = b'{"text": "hi"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()

    assert webhook_signature("k", 1700000000, body) == f"sha256={expected}"
    assert webhook_signature("k", 1700000001, body) != webhook_signature("k", 1700000000, body)

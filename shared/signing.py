"""What one side signs and the other checks, so both spell it alike: signed webhooks, survey links
(CSAT and NPS), and the Message-ID domain that lets a reply find its ticket.

Webhooks (notify's outgoing ones, and inbound email posted to intake): the sender puts the unix time
in `X-Switchboard-Timestamp` and `sha256=<hex HMAC-SHA256(key, "{timestamp}.{raw body}")>` in
`X-Switchboard-Signature`. A timestamp more than the tolerance away from now is refused, so a
captured request cannot be replayed later.

Survey links (notify writes them, intake checks them), signed with the same key, `expires` unix seconds:
- CSAT: `signature` is hex HMAC-SHA256(key, "{ticket_id}.{expires}").
- NPS: `signature` is hex HMAC-SHA256(key, the JSON array `["nps", survey_id, customer_id, ticket_id,
  expires]`, compact). JSON keeps the fields apart whatever a customer id holds, and the leading "nps"
  keeps a CSAT signature from ever passing as an NPS one.
"""

import hashlib
import hmac
import json

TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
SIGNATURE_HEADER = "X-Switchboard-Signature"
MESSAGE_ID_DOMAIN = "switchboard.local"
"""The domain of every Message-ID notify writes; intake threads a reply to one back to its ticket."""


class BadSignature(Exception):
    """Not signed with our key, or not recently: the message says which."""


def _hmac_hex(key: str, message: bytes) -> str:
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def webhook_signature(key: str, timestamp: int, body: bytes) -> str:
    return "sha256=" + _hmac_hex(key, f"{timestamp}.".encode() + body)


def verify_webhook(
    key: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float, tolerance: int
) -> str:
    """The verified signature's hex digest (the receiver's replay key), or `BadSignature` saying what is wrong."""
    if not timestamp or not signature:
        raise BadSignature(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not (timestamp.isascii() and timestamp.isdigit()):  # isdigit() alone admits "²", which int() refuses
        raise BadSignature(f"{TIMESTAMP_HEADER} must be unix seconds")
    if abs(now - int(timestamp)) > tolerance:
        raise BadSignature(f"{TIMESTAMP_HEADER} is more than {tolerance} seconds away from now")
    expected = webhook_signature(key, int(timestamp), body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise BadSignature(f"{SIGNATURE_HEADER} does not match the body")
    return expected.removeprefix("sha256=")


def csat_signature(key: str, ticket_id: str, expires: int) -> str:
    return _hmac_hex(key, f"{ticket_id}.{expires}".encode())


def verify_csat(key: str, ticket_id: str, expires: int, signature: str, *, now: float) -> None:
    _verify_link(csat_signature(key, ticket_id, expires), signature, expires, now)


def nps_signature(key: str, survey_id: str, customer_id: str, ticket_id: str, expires: int) -> str:
    signed = json.dumps(["nps", survey_id, customer_id, ticket_id, expires], separators=(",", ":"))
    return _hmac_hex(key, signed.encode())


def verify_nps(
    key: str, survey_id: str, customer_id: str, ticket_id: str, expires: int, signature: str, *, now: float
) -> None:
    _verify_link(nps_signature(key, survey_id, customer_id, ticket_id, expires), signature, expires, now)


def _verify_link(expected: str, signature: str, expires: int, now: float) -> None:
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise BadSignature("the survey link's signature is not valid")
    if expires < now:
        raise BadSignature("the survey link has expired")

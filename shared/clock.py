"""Time as stored: epoch milliseconds.

MongoDB documents keep instants as integer epoch milliseconds rather than BSON dates: they
compare and sort the same on a real replica set and on the embedded Mongo-wire server, which
returns BSON dates as strings.
"""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, to the millisecond: the precision instants are stored with, so a stored value reads back equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def now_ms() -> int:
    return to_ms(utc_now())

"""What planning records of routing's own facts, per interval, channel and skill set. Pure.

Facts are counted into 15-minute buckets (the finest interval), one document per bucket, channel
and skill set, as `$inc` increments the use cases queue with the transaction's other writes; 30-
and 60-minute intervals are sums of them, made when read.

- arrivals and the wait until assignment count in the bucket the ticket arrived in;
- handle time (assigned → solved or closed, or → handed back) counts in the bucket it was assigned in;
- agents' available time and the time they spent handling tickets (one ticket-second per second
  per ticket held) are split across the buckets they span, in the `ALL` row (every channel and skill).

Waits and handle times are kept as histograms over `EDGES` (seconds), so percentiles and the share
within a target are read off them (exact at the edges, interpolated between).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.clock import from_ms, to_ms

BUCKET = timedelta(minutes=15)
BUCKET_MS = int(BUCKET.total_seconds() * 1000)
INTERVALS_MINUTES = (15, 30, 60)
ALL = "*"
EDGES: tuple[float, ...] = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400)
"""Upper edges of the histogram buckets, in seconds; a last bucket holds everything above."""


def skill_set(skills: Iterable[str]) -> str:
    """The key of a skill set: its skills sorted, joined by `+`; `-` for none."""
    return "+".join(sorted(set(skills))) or "-"


def bucket_of(instant: datetime) -> int:
    """The start (epoch ms) of the 15-minute bucket `instant` falls in."""
    ms = to_ms(instant)
    return ms - ms % BUCKET_MS


def histogram_slot(seconds: float) -> str:
    for number, edge in enumerate(EDGES):
        if seconds <= edge:
            return str(number)
    return str(len(EDGES))


@dataclass(frozen=True)
class Increment:
    """`$inc` of `counts` on the bucket starting at `bucket_ms`, for `channel` and `skills`."""

    bucket_ms: int
    channel: str
    skills: str
    counts: dict[str, float]

    @property
    def key(self) -> str:
        return f"{self.bucket_ms}:{self.channel}:{self.skills}"


def arrived(channel: str, skills: Iterable[str], at: datetime) -> list[Increment]:
    return [Increment(bucket_of(at), channel, skill_set(skills), {"arrivals": 1})]


def assigned(channel: str, skills: Iterable[str], created_at: datetime, at: datetime) -> list[Increment]:
    """The wait until (first or later) assignment, counted where the ticket arrived."""
    wait = max((at - created_at).total_seconds(), 0.0)
    return [Increment(bucket_of(created_at), channel, skill_set(skills),
                      {"assigned": 1, "wait_seconds": wait, f"wait_histogram.{histogram_slot(wait)}": 1})]


def handled(channel: str, skills: Iterable[str], assigned_at: datetime, until: datetime) -> list[Increment]:
    """A ticket's handling ended (solved, closed, or handed back): its handle time, and the ticket-seconds
    it took of its agent, bucket by bucket."""
    seconds = max((until - assigned_at).total_seconds(), 0.0)
    increments = [Increment(bucket_of(assigned_at), channel, skill_set(skills),
                            {"handled": 1, "handle_seconds": seconds, f"handle_histogram.{histogram_slot(seconds)}": 1})]
    increments += [Increment(start, ALL, ALL, {"busy_seconds": part}) for start, part in split(assigned_at, until)]
    return increments


def available_during(since: datetime, until: datetime) -> list[Increment]:
    """An agent was available from `since` to `until`: agent-seconds, bucket by bucket."""
    return [Increment(start, ALL, ALL, {"available_seconds": part}) for start, part in split(since, until)]


def split(since: datetime, until: datetime) -> Iterator[tuple[int, float]]:
    """The seconds of [since, until) in each bucket it spans."""
    start_ms, end_ms = to_ms(since), to_ms(until)
    bucket = start_ms - start_ms % BUCKET_MS
    while bucket < end_ms:
        part = min(end_ms, bucket + BUCKET_MS) - max(start_ms, bucket)
        if part > 0:
            yield bucket, part / 1000
        bucket += BUCKET_MS


# --- reading it back --------------------------------------------------------------------------


@dataclass
class Distribution:
    count: int = 0
    total_seconds: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(EDGES) + 1))

    def add(self, count: int, total: float, histogram: dict | None) -> None:
        self.count += count
        self.total_seconds += total
        for slot, n in (histogram or {}).items():
            self.histogram[int(slot)] += int(n)

    @property
    def mean(self) -> float | None:
        return self.total_seconds / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Interpolated within the histogram bucket it falls in (the last bucket reads as its lower edge)."""
        total = sum(self.histogram)
        if not total:
            return None
        rank, seen = q * total, 0
        for slot, n in enumerate(self.histogram):
            if n and seen + n >= rank:
                low = EDGES[slot - 1] if slot else 0.0
                if slot == len(EDGES):
                    return low
                return low + (EDGES[slot] - low) * (rank - seen) / n
            seen += n
        return EDGES[-1]

    def share_within(self, seconds: float) -> float | None:
        total = sum(self.histogram)
        if not total:
            return None
        within, low = 0.0, 0.0
        for slot, n in enumerate(self.histogram):
            high = EDGES[slot] if slot < len(EDGES) else None
            if high is not None and high <= seconds:
                within += n
            elif high is not None and low < seconds:
                within += n * (seconds - low) / (high - low)
            low = high if high is not None else low
        return within / total

    def view(self) -> dict:
        return {"count": self.count, "mean_seconds": _round(self.mean), "p50_seconds": _round(self.quantile(0.5)),
                "p90_seconds": _round(self.quantile(0.9)),
                "histogram": {_edge_label(slot): n for slot, n in enumerate(self.histogram) if n}}


def _edge_label(slot: int) -> str:
    return f"le_{EDGES[slot]:g}" if slot < len(EDGES) else f"gt_{EDGES[-1]:g}"


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


@dataclass
class Row:
    """One interval of one channel and skill set, summed from its buckets."""

    arrivals: int = 0
    waits: Distribution = field(default_factory=Distribution)
    handle: Distribution = field(default_factory=Distribution)

    def add(self, document: dict) -> None:
        self.arrivals += int(document.get("arrivals", 0))
        self.waits.add(int(document.get("assigned", 0)), document.get("wait_seconds", 0.0), document.get("wait_histogram"))
        self.handle.add(int(document.get("handled", 0)), document.get("handle_seconds", 0.0),
                        document.get("handle_histogram"))


@dataclass
class Interval:
    start_ms: int
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    available_seconds: float = 0.0
    busy_seconds: float = 0.0

    def view(self, interval_seconds: float) -> dict:
        return {
            "start": from_ms(self.start_ms).isoformat(),
            "arrivals": sum(row.arrivals for row in self.rows.values()),
            "agents_available": round(self.available_seconds / interval_seconds, 2),
            "occupancy": round(self.busy_seconds / self.available_seconds, 3) if self.available_seconds else None,
            "by_channel_and_skills": [
                {"channel": channel, "skills": skills, "arrivals": row.arrivals, "wait": row.waits.view(),
                 "handle_time": row.handle.view()}
                for (channel, skills), row in sorted(self.rows.items())
            ],
        }


def intervals(documents: Iterable[dict], interval_minutes: int, open_available: Iterable[Increment] = ()) -> list[Interval]:
    """The stored buckets (and agents' available time not yet closed) summed into intervals, in time order."""
    size = interval_minutes * 60_000
    found: dict[int, Interval] = {}
    for document in documents:
        start = document["bucket_ms"] - document["bucket_ms"] % size
        interval = found.setdefault(start, Interval(start))
        if document["channel"] == ALL:
            interval.available_seconds += document.get("available_seconds", 0.0)
            interval.busy_seconds += document.get("busy_seconds", 0.0)
        else:
            interval.rows.setdefault((document["channel"], document["skills"]), Row()).add(document)
    for increment in open_available:
        start = increment.bucket_ms - increment.bucket_ms % size
        found.setdefault(start, Interval(start)).available_seconds += increment.counts["available_seconds"]
    return [found[start] for start in sorted(found)]

"""Business-time arithmetic on epoch milliseconds. Pure: no I/O, no clock reading.

A calendar is open during its weekly hours, in its own timezone, except on its holidays. Every
instant is an integer of epoch milliseconds (UTC) and every duration an integer of milliseconds
of *open* time, so the arithmetic is exact:

- Each local date's hours are turned into UTC intervals with that date's own UTC offset, so a
  09:00-17:00 day lasts 8 real hours on any day, and a 00:00-06:00 shift lasts 5 real hours on
  the spring-forward night and 7 on the fall-back night: business time is the real time that
  passes while the calendar is open.
- A wall time that falls in a spring-forward gap is read with the offset before the change
  (so it moves forward by the gap); an ambiguous wall time of a fall-back night is its first
  occurrence. An interval left empty by this is skipped; intervals never overlap.
- An overnight shift (`22:00-06:00`) belongs to the day it starts on; its part after midnight
  lies on the next date, and like every part of every date it is closed when that date is a
  holiday.

`add(start, d)` is the instant at which `d` ms of open time have passed since `start`;
`elapsed(a, b)` is the open time in `[a, b)`. For every d > 0: `elapsed(start, add(start, d)) == d`,
and `add` never answers an instant inside closed time (the millisecond before it is open).
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holidays_package

MINUTES_PER_DAY = 24 * 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
MAX_CLOSED_DAYS = 3 * 366
"""A calendar closed this many days in a row is treated as never opening again (say, every day a holiday)."""


class CalendarNeverOpens(ValueError):
    """The calendar has no open time ahead of the given instant."""


def to_epoch_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // _MS


class Calendar:
    """What every calendar answers. Durations and instants are integer milliseconds."""

    name: str
    business: bool

    def add(self, start_ms: int, duration_ms: int) -> int:
        raise NotImplementedError

    def elapsed(self, start_ms: int, end_ms: int) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class ContinuousTime(Calendar):
    """Calendar time: always open (targets that count every second, nights and holidays included)."""

    business = False

    def __init__(self, name: str = "calendar") -> None:
        self.name = name

    def add(self, start_ms: int, duration_ms: int) -> int:
        return start_ms + max(duration_ms, 0)

    def elapsed(self, start_ms: int, end_ms: int) -> int:
        return max(end_ms - start_ms, 0)

    def describe(self) -> dict:
        return {"name": self.name, "business": False, "timezone": "UTC", "hours": "always open"}


@dataclass(frozen=True)
class Holidays:
    """Closed local dates: a country's (and region's) public holidays from `holidays`, plus explicit dates."""

    country: str | None = None
    region: str | None = None
    dates: frozenset[date] = frozenset()
    _table: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.country:
            # Raises NotImplementedError for an unknown country or region; years fill in lazily.
            table = holidays_package.country_holidays(self.country, subdiv=self.region)
            object.__setattr__(self, "_table", table)

    def __contains__(self, day: date) -> bool:
        return day in self.dates or (self._table is not None and day in self._table)


WeeklyHours = Mapping[int, tuple[tuple[int, int], ...]]
"""Weekday (Monday 0) -> sorted, disjoint (start, end) minutes of the local day, end at most 24:00."""


def weekly_hours(intervals: Iterable[tuple[int, int, int]]) -> dict[int, tuple[tuple[int, int], ...]]:
    """From (weekday, start minute, end minute) with end <= start meaning an overnight shift.

    The overnight shift's part after midnight goes to the next weekday; overlapping or touching
    intervals of one day are merged.
    """
    by_day: dict[int, list[tuple[int, int]]] = {day: [] for day in range(7)}
    for weekday, start, end in intervals:
        if end > start:
            by_day[weekday].append((start, end))
        else:  # overnight: 22:00-06:00
            by_day[weekday].append((start, MINUTES_PER_DAY))
            if end > 0:
                by_day[(weekday + 1) % 7].append((0, end))
    merged: dict[int, tuple[tuple[int, int], ...]] = {}
    for weekday, spans in by_day.items():
        result: list[list[int]] = []
        for start, end in sorted(spans):
            if result and start <= result[-1][1]:
                result[-1][1] = max(result[-1][1], end)
            else:
                result.append([start, end])
        merged[weekday] = tuple((start, end) for start, end in result)
    return merged


class BusinessCalendar(Calendar):
    business = True

    def __init__(self, name: str, timezone: str, hours: WeeklyHours, holidays: Holidays | None = None) -> None:
        self.name = name
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.hours = {day: tuple(hours.get(day, ())) for day in range(7)}
        if not any(self.hours.values()):
            raise ValueError("a business calendar needs open hours on at least one weekday")
        self.holidays = holidays or Holidays()
        self._days: dict[date, tuple[tuple[int, int], ...]] = {}

    # --- the open intervals -------------------------------------------------------------------

    def _wall_ms(self, day: date, minute: int) -> int:
        if minute >= MINUTES_PER_DAY:
            return self._wall_ms(day + timedelta(days=1), minute - MINUTES_PER_DAY)
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)  # fold=0
        return to_epoch_ms(local)

    def day_intervals(self, day: date) -> tuple[tuple[int, int], ...]:
        """The UTC intervals during which the calendar is open on this local date."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        spans: list[tuple[int, int]] = []
        if day not in self.holidays:
            for start, end in self.hours[day.weekday()]:
                start_ms, end_ms = self._wall_ms(day, start), self._wall_ms(day, end)
                if spans:
                    start_ms = max(start_ms, spans[-1][1])
                if end_ms > start_ms:
                    spans.append((start_ms, end_ms))
        if len(self._days) > 8192:
            self._days.clear()
        result = self._days[day] = tuple(spans)
        return result

    def intervals_from(self, from_ms: int) -> Iterator[tuple[int, int]]:
        """Open intervals ending after `from_ms`, in order, disjoint, clipped to start at `from_ms` or later."""
        day = datetime.fromtimestamp(from_ms / 1000, self.zone).date() - timedelta(days=1)
        floor = from_ms
        closed_days = 0
        while closed_days <= MAX_CLOSED_DAYS:
            opened = False
            for start, end in self.day_intervals(day):
                start = max(start, floor)
                if end > start:
                    opened = True
                    yield start, end
                    floor = end
            closed_days = 0 if opened else closed_days + 1
            day += timedelta(days=1)
        raise CalendarNeverOpens(f"calendar {self.name} is closed for more than {MAX_CLOSED_DAYS} days in a row")

    # --- arithmetic ---------------------------------------------------------------------------

    def add(self, start_ms: int, duration_ms: int) -> int:
        if duration_ms <= 0:
            return start_ms
        remaining = duration_ms
        for start, end in self.intervals_from(start_ms):
            if end - start >= remaining:
                return start + remaining
            remaining -= end - start
        raise AssertionError("unreachable")  # intervals_from raises first

    def elapsed(self, start_ms: int, end_ms: int) -> int:
        if end_ms <= start_ms:
            return 0
        total = 0
        for start, end in self.intervals_from(start_ms):
            if start >= end_ms:
                break
            total += min(end, end_ms) - start
        return total

    def is_open(self, instant_ms: int) -> bool:
        """Whether the millisecond starting at `instant_ms` is open time."""
        return self.elapsed(instant_ms, instant_ms + 1) == 1

    def describe(self) -> dict:
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        return {
            "name": self.name,
            "business": True,
            "timezone": self.timezone,
            "hours": {
                names[day]: [f"{_hhmm(start)}-{_hhmm(end)}" for start, end in spans]
                for day, spans in self.hours.items()
                if spans
            },
            "holidays": {
                "country": self.holidays.country,
                "region": self.holidays.region,
                "dates": sorted(day.isoformat() for day in self.holidays.dates),
            },
        }


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"

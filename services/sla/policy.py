"""SLA policies and calendars, read from a YAML file. Pure apart from reading that one file.

Every value remembers the line it came from (`_LineLoader`), so a file that is not valid is refused
with the line and the reason (`shared.rules_file.RulesFileError`), before the service connects to
anything. The file format
is documented in services/sla/README.md.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from services.sla.calendar import BusinessCalendar, Calendar, ContinuousTime, Holidays, weekly_hours
from shared import rules_file
from shared.events import Channel, CustomerTier, Priority, TicketStatus
from shared.rules_file import RulesFileError

DEFAULT_POLICIES_PATH = Path(__file__).parent / "policies.yaml"
CALENDAR_TIME = "calendar"
"""The name of the built-in, always-open calendar: `time: calendar` targets count every second."""


class Metric(StrEnum):
    FIRST_REPLY = "first_reply"
    NEXT_REPLY = "next_reply"
    PERIODIC_UPDATE = "periodic_update"
    RESOLUTION = "resolution"


PAUSABLE_STATUSES = (TicketStatus.PENDING, TicketStatus.ON_HOLD)
MAX_TARGET_SECONDS = 366 * 86400
"""Longer targets are typos (`30000d`), and their due times would not fit a date."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Target:
    metric: Metric
    target_seconds: int
    calendar: Calendar
    pause_on: frozenset[str]

    def describe(self) -> dict:
        return {
            "target_seconds": self.target_seconds,
            "time": "business" if self.calendar.business else "calendar",
            "calendar": self.calendar.name,
            "pause_on": sorted(self.pause_on),
        }


@dataclass(frozen=True)
class TicketFacts:
    """What policies match on."""

    priority: str
    tier: str | None = None
    channel: str | None = None
    category: str | None = None
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Conditions:
    """Each listed condition must hold; within one, any listed value matches. Empty matches every ticket."""

    priority: frozenset[str] = frozenset()
    tier: frozenset[str] = frozenset()
    channel: frozenset[str] = frozenset()
    category: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    """The ticket carries at least one of these tags."""

    def match(self, ticket: TicketFacts) -> bool:
        return (
            (not self.priority or ticket.priority in self.priority)
            and (not self.tier or (ticket.tier or "standard") in self.tier)
            and (not self.channel or ticket.channel in self.channel)
            and (not self.category or ticket.category in self.category)
            and (not self.tags or bool(self.tags & ticket.tags))
        )

    def describe(self) -> dict:
        return {name: sorted(values) for name, values in vars(self).items() if values}


@dataclass(frozen=True)
class Policy:
    name: str
    conditions: Conditions
    targets: dict[Metric, Target]
    warnings: tuple[float, ...]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "match": self.conditions.describe(),
            "warnings": list(self.warnings),
            "targets": {metric.value: target.describe() for metric, target in self.targets.items()},
        }


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[Policy, ...]
    calendars: dict[str, Calendar] = field(default_factory=dict)

    def match(self, ticket: TicketFacts) -> Policy | None:
        """The first policy whose conditions the ticket meets."""
        return next((policy for policy in self.policies if policy.conditions.match(ticket)), None)

    def by_name(self, name: str) -> Policy | None:
        return next((policy for policy in self.policies if policy.name == name), None)

    def calendar(self, name: str) -> Calendar | None:
        return self.calendars.get(name)

    def describe(self) -> dict:
        return {
            "policies": [policy.describe() for policy in self.policies],
            "calendars": [calendar.describe() for calendar in self.calendars.values()],
        }

    @property
    def digest(self) -> str:
        """Identifies what the file means, not how it is written (comments, key order, `30m` or `1800`), so
        sla reconciles its clocks when the policies change and not when the file is merely reformatted."""
        described = self.describe()
        described["calendars"].sort(key=lambda calendar: calendar["name"])
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


# --- reading YAML with line numbers ------------------------------------------------------------


class _Map(dict):
    line: int
    key_lines: dict


class _List(list):
    line: int
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
        result = _Map()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise RulesFileError("mapping keys must be plain values", key_node.start_mark.line + 1)
            key = str(key)
            if key in result:
                raise RulesFileError(f"duplicate key '{key}'", key_node.start_mark.line + 1)
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            raise RulesFileError(f"'{node.value}' is not a date YYYY-MM-DD", node.start_mark.line + 1) from None

    def construct_sequence(self, node, deep=False):
        result = _List(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence)
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _LineLoader.construct_yaml_timestamp)


def load_policies(path: str | Path = DEFAULT_POLICIES_PATH) -> PolicySet:
    text = rules_file.read(path)
    try:
        return parse_policies(text)
    except RulesFileError as error:
        raise error.in_file(path) from None


def parse_policies(text: str) -> PolicySet:
    document = rules_file.parse(text, _LineLoader)
    root = _mapping(document, 1, "the file")
    _only(root, {"calendars", "policies"})
    calendars: dict[str, Calendar] = {CALENDAR_TIME: ContinuousTime(CALENDAR_TIME)}
    raw_calendars = root.get("calendars", _Map())
    raw_calendars = _mapping(raw_calendars, _line(root, "calendars"), "calendars")
    for name, spec in raw_calendars.items():
        if name == CALENDAR_TIME:
            raise RulesFileError(f"calendar name '{CALENDAR_TIME}' is reserved for calendar time", _line(raw_calendars, name))
        calendars[name] = _calendar(name, spec, _line(raw_calendars, name))
    if "policies" not in root:
        raise RulesFileError("missing 'policies': a list of policies, the first that matches applies", root.line)
    raw_policies = root["policies"]
    if not isinstance(raw_policies, list) or not raw_policies:
        raise RulesFileError("'policies' must be a non-empty list", _line(root, "policies"))
    policies: list[Policy] = []
    for index, spec in enumerate(raw_policies):
        policy = _policy(spec, raw_policies.item_lines[index], calendars)
        if any(earlier.name == policy.name for earlier in policies):
            raise RulesFileError(f"policy name '{policy.name}' is used twice", raw_policies.item_lines[index])
        policies.append(policy)
    return PolicySet(tuple(policies), calendars)


def _line(mapping: _Map, key: str) -> int:
    return mapping.key_lines.get(key, mapping.line)


def _mapping(value: object, line: int, what: str) -> _Map:
    if not isinstance(value, _Map):
        raise RulesFileError(f"{what} must be a mapping", getattr(value, "line", line))
    return value


def _only(mapping: _Map, allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for key in mapping:
        if key not in allowed:
            raise RulesFileError(f"unknown key '{key}' (expected one of: {', '.join(sorted(allowed))})", _line(mapping, key))


def _strings(value: object, line: int, what: str) -> list[str]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
        return [str(item) for item in value]
    raise RulesFileError(f"{what} must be a string or a list of strings", line)


_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_DURATION = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


def _minute(text: str, line: int) -> int:
    found = _TIME.match(text.strip())
    if not found or (found.group(1) == "24" and found.group(2) != "00"):
        raise RulesFileError(f"'{text}' is not a time of day HH:MM (00:00 to 24:00)", line)
    return int(found.group(1)) * 60 + int(found.group(2))


def _weekdays(key: str, line: int) -> list[int]:
    key = key.strip().lower()
    if key in ("daily", "every_day"):
        return list(range(7))
    if key == "weekdays":
        return list(range(5))
    if key == "weekend":
        return [5, 6]
    if "-" in key:
        first, last = (part.strip() for part in key.split("-", 1))
        if first in WEEKDAYS and last in WEEKDAYS:
            start, end = WEEKDAYS.index(first), WEEKDAYS.index(last)
            return [(start + offset) % 7 for offset in range((end - start) % 7 + 1)]
    elif key in WEEKDAYS:
        return [WEEKDAYS.index(key)]
    raise RulesFileError(f"'{key}' is not a weekday (mon..sun), a range like mon-fri, 'weekdays', 'weekend' or 'daily'", line)


def _calendar(name: str, spec: object, line: int) -> Calendar:
    spec = _mapping(spec, line, f"calendar '{name}'")
    _only(spec, {"timezone", "hours", "holidays"})
    if "timezone" not in spec:
        raise RulesFileError(f"calendar '{name}' needs a timezone (an IANA name such as Europe/Berlin)", spec.line)
    timezone = spec["timezone"]
    try:
        if not isinstance(timezone, str):
            raise ZoneInfoNotFoundError
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesFileError(f"unknown timezone '{timezone}'", _line(spec, "timezone")) from None
    if "hours" not in spec:
        raise RulesFileError(f"calendar '{name}' needs weekly 'hours', e.g. mon-fri: [09:00-17:00]", spec.line)
    hours = _mapping(spec["hours"], _line(spec, "hours"), "hours")
    intervals: list[tuple[int, int, int]] = []
    for days, ranges in hours.items():
        day_line = _line(hours, days)
        for text in _strings(ranges, day_line, f"hours of {days}"):
            if text.count("-") != 1:
                raise RulesFileError(f"'{text}' is not an interval HH:MM-HH:MM", day_line)
            start, end = (_minute(part, day_line) for part in text.split("-"))
            if start == end:
                raise RulesFileError(f"'{text}' is an empty interval", day_line)
            if start == 24 * 60:
                raise RulesFileError(f"'{text}' cannot start at 24:00", day_line)
            intervals.extend((weekday, start, end) for weekday in _weekdays(days, day_line))
    if not intervals:
        raise RulesFileError(f"calendar '{name}' is never open", _line(spec, "hours"))
    holidays = Holidays()
    if "holidays" in spec:
        holidays = _holidays(spec["holidays"], _line(spec, "holidays"))
    return BusinessCalendar(name, timezone, weekly_hours(intervals), holidays)


def _holidays(spec: object, line: int) -> Holidays:
    spec = _mapping(spec, line, "holidays")
    _only(spec, {"country", "region", "dates"})
    country = spec.get("country")
    region = spec.get("region")
    if country is not None and not isinstance(country, str):
        raise RulesFileError("holidays country must be an ISO 3166 code such as DE", _line(spec, "country"))
    if region is not None and (not isinstance(region, str) or country is None):
        raise RulesFileError("holidays region needs a country and must be a code such as BY", _line(spec, "region"))
    dates: set[date] = set()
    raw_dates = spec.get("dates", [])
    if not isinstance(raw_dates, list):
        raise RulesFileError("holidays dates must be a list of dates (YYYY-MM-DD)", _line(spec, "dates"))
    for index, value in enumerate(raw_dates):
        item_line = raw_dates.item_lines[index]
        if isinstance(value, date):
            dates.add(value)
            continue
        try:
            dates.add(date.fromisoformat(str(value)))
        except ValueError:
            raise RulesFileError(f"'{value}' is not a date YYYY-MM-DD", item_line) from None
    try:
        return Holidays(country=country, region=region, dates=frozenset(dates))
    except NotImplementedError as error:
        raise RulesFileError(f"holidays: {error}", _line(spec, "region" if region else "country")) from None


def parse_duration(value: object, line: int) -> int:
    """Seconds from an integer or text such as `90s`, `30m`, `4h`, `1h30m`, `2d` (a day is 24 hours of the target's time)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and value.strip() and (found := _DURATION.match(value.strip())):
        days, hours, minutes, secs = (int(part or 0) for part in found.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise RulesFileError(f"'{value}' is not a duration (seconds, or e.g. 30m, 4h, 1h30m, 2d)", line)
    if seconds <= 0:
        raise RulesFileError("a target must be longer than 0 seconds", line)
    if seconds > MAX_TARGET_SECONDS:
        raise RulesFileError(f"'{value}' is longer than the longest target, {MAX_TARGET_SECONDS // 86400}d", line)
    return seconds


_CONDITION_VALUES: dict[str, Sequence[str] | None] = {
    "priority": [p.value for p in Priority],
    "tier": [t.value for t in CustomerTier],
    "channel": [c.value for c in Channel],
    "category": None,
    "tags": None,
}


def _policy(spec: object, line: int, calendars: dict[str, Calendar]) -> Policy:
    spec = _mapping(spec, line, "a policy")
    _only(spec, {"name", "match", "calendar", "warnings", "targets"})
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise RulesFileError("a policy needs a 'name' of letters, digits, '.', '_' or '-' (at most 64)", _line(spec, "name"))
    conditions: dict[str, frozenset[str]] = {}
    if "match" in spec and spec["match"] is not None:
        match = _mapping(spec["match"], _line(spec, "match"), "match")
        _only(match, _CONDITION_VALUES)
        for key, value in match.items():
            values = _strings(value, _line(match, key), f"match.{key}")
            allowed = _CONDITION_VALUES[key]
            for item in values:
                if allowed is not None and item not in allowed:
                    raise RulesFileError(f"'{item}' is not a {key} (one of: {', '.join(allowed)})", _line(match, key))
            conditions[key] = frozenset(values)
    default_calendar = spec.get("calendar", CALENDAR_TIME)
    if not isinstance(default_calendar, str) or default_calendar not in calendars:
        raise RulesFileError(f"unknown calendar '{default_calendar}'", _line(spec, "calendar"))
    warnings = spec.get("warnings", [])
    if not isinstance(warnings, list):
        raise RulesFileError("warnings must be a list of fractions of the target, e.g. [0.5, 0.75, 0.9]", _line(spec, "warnings"))
    thresholds: list[float] = []
    for index, value in enumerate(warnings):
        item_line = warnings.item_lines[index]
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                value = float(value.strip()[:-1]) / 100
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise RulesFileError(f"warning threshold '{value}' must be a fraction between 0 and 1 (or a percentage like 75%)", item_line)
        if value in thresholds:
            raise RulesFileError(f"warning threshold {value} is listed twice", item_line)
        thresholds.append(float(value))
    if "targets" not in spec:
        raise RulesFileError(f"policy '{name}' needs 'targets'", spec.line)
    raw_targets = _mapping(spec["targets"], _line(spec, "targets"), "targets")
    _only(raw_targets, [m.value for m in Metric])
    targets: dict[Metric, Target] = {}
    for metric_name, target_spec in raw_targets.items():
        metric = Metric(metric_name)
        targets[metric] = _target(metric, target_spec, _line(raw_targets, metric_name), calendars, default_calendar)
    if not targets:
        raise RulesFileError(f"policy '{name}' sets no target", _line(spec, "targets"))
    return Policy(name, Conditions(**conditions), targets, tuple(sorted(thresholds)))


def _target(metric: Metric, spec: object, line: int, calendars: dict[str, Calendar], default_calendar: str) -> Target:
    if not isinstance(spec, _Map):  # the short form: `first_reply: 4h`, in the policy's calendar
        return Target(metric, parse_duration(spec, line), calendars[default_calendar], frozenset(PAUSABLE_STATUSES))
    _only(spec, {"target", "time", "calendar", "pause_on"})
    if "target" not in spec:
        raise RulesFileError(f"{metric.value} needs a 'target' duration", spec.line)
    seconds = parse_duration(spec["target"], _line(spec, "target"))
    time_kind = spec.get("time", "business" if default_calendar != CALENDAR_TIME or "calendar" in spec else "calendar")
    if time_kind not in ("business", "calendar"):
        raise RulesFileError("time must be 'business' or 'calendar'", _line(spec, "time"))
    calendar_name = spec.get("calendar", default_calendar)
    if time_kind == "calendar":
        if "calendar" in spec and calendar_name != CALENDAR_TIME:
            reason = f"{metric.value} counts calendar time, so it cannot name calendar '{calendar_name}'"
            raise RulesFileError(reason, _line(spec, "calendar"))
        calendar_name = CALENDAR_TIME
    elif calendar_name == CALENDAR_TIME:
        raise RulesFileError(f"{metric.value} counts business time but names no business calendar", _line(spec, "time"))
    if not isinstance(calendar_name, str) or calendar_name not in calendars:
        raise RulesFileError(f"unknown calendar '{calendar_name}'", _line(spec, "calendar"))
    pause_on = frozenset(PAUSABLE_STATUSES)
    if "pause_on" in spec:
        raw = spec["pause_on"] if spec["pause_on"] is not None else []
        pause_on = frozenset(_strings(raw, _line(spec, "pause_on"), "pause_on") if raw != [] else [])
        for status in pause_on:
            if status not in PAUSABLE_STATUSES:
                raise RulesFileError(f"cannot pause on '{status}' (only: {', '.join(PAUSABLE_STATUSES)})", _line(spec, "pause_on"))
    return Target(metric, seconds, calendars[calendar_name], pause_on)

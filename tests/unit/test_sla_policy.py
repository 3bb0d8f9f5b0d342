"""The policy file: what it means, and how a wrong one is refused with its line and reason."""

import textwrap

import pytest

from services.sla.policy import (
    DEFAULT_POLICIES_PATH,
    Metric,
    TicketFacts,
    load_policies,
    parse_policies,
)
from shared.rules_file import RulesFileError

GOOD = textwrap.dedent(
    """\
    calendars:
      office:
        timezone: Europe/Berlin
        hours:
          mon-fri: ["09:00-12:00", "13:00-17:00"]
          sat: 10:00-14:00
        holidays:
          country: DE
          region: BY
          dates: [2026-12-24]
      nights:
        timezone: America/New_York
        hours:
          daily: 22:00-06:00
    policies:
      - name: vip
        match: {tier: vip, priority: [high, urgent]}
        calendar: office
        warnings: [0.5, 75%, 0.9]
        targets:
          first_reply: 30m
          resolution: {target: 8h, time: calendar, pause_on: []}
      - name: billing-tagged
        match: {tags: [billing, refund], channel: [email, web], category: payments}
        targets:
          next_reply: {target: 2h, calendar: nights, pause_on: [pending]}
      - name: everyone
        targets:
          first_reply: 1d
    """
)


def test_the_first_matching_policy_applies():
    policies = parse_policies(GOOD)

    assert policies.match(TicketFacts(priority="urgent", tier="vip")).name == "vip"
    assert policies.match(TicketFacts(priority="low", tier="vip")).name == "everyone"
    billing = TicketFacts(priority="low", channel="email", category="payments", tags=frozenset({"refund", "x"}))
    assert policies.match(billing).name == "billing-tagged"
    assert policies.match(TicketFacts(priority="low", channel="chat", category="payments", tags=frozenset({"refund"}))).name == "everyone"


def test_targets_say_their_time_calendar_and_pauses():
    policies = parse_policies(GOOD)
    vip, billing, everyone = policies.policies

    assert vip.warnings == (0.5, 0.75, 0.9)
    first = vip.targets[Metric.FIRST_REPLY]
    assert (first.target_seconds, first.calendar.name, first.calendar.business) == (1800, "office", True)
    assert first.pause_on == {"pending", "on_hold"}
    resolution = vip.targets[Metric.RESOLUTION]
    assert (resolution.target_seconds, resolution.calendar.business, resolution.pause_on) == (28800, False, frozenset())
    next_reply = billing.targets[Metric.NEXT_REPLY]
    assert (next_reply.calendar.name, next_reply.pause_on) == ("nights", {"pending"})
    assert everyone.targets[Metric.FIRST_REPLY].target_seconds == 86400
    assert not everyone.targets[Metric.FIRST_REPLY].calendar.business  # no calendar named: calendar time


def test_the_shipped_policy_file_is_valid_and_has_a_catch_all():
    policies = load_policies(DEFAULT_POLICIES_PATH)
    assert policies.match(TicketFacts(priority="low")) is not None
    assert all(policy.describe()["targets"] for policy in policies.policies)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("policies:\n  - name: a\n    targets:\n      first_reply: 3 weeks\n", 4, "'3 weeks' is not a duration"),
        ("policies:\n  - name: a\n    targets:\n      first_reply: 0\n", 4, "longer than 0"),
        ("policies:\n  - name: a\n    targets:\n      first_response: 1h\n", 4, "unknown key 'first_response'"),
        ("policies:\n  - name: a\n    match:\n      priority: asap\n    targets: {first_reply: 1h}\n", 4, "'asap' is not a priority"),
        ("policies:\n  - name: a\n    calendar: nope\n    targets: {first_reply: 1h}\n", 3, "unknown calendar 'nope'"),
        ("policies:\n  - name: a\n    warnings: [0.5, 1.5]\n    targets: {first_reply: 1h}\n", 3, "between 0 and 1"),
        ("policies:\n  - name: a\n    targets: {first_reply: 1h}\n  - name: a\n    targets: {first_reply: 1h}\n", 4, "used twice"),
        ("policies:\n  - name: a\n    targets: {first_reply: 1h}\n    targets: {first_reply: 2h}\n", 4, "duplicate key 'targets'"),
        ("policies:\n  - name: a\n    targets: [\n", 4, "not valid YAML"),
        ("calendars:\n  c:\n    timezone: Mars/Olympus\n    hours: {mon: 09:00-17:00}\npolicies: []\n", 3, "unknown timezone"),
        ("calendars:\n  c:\n    timezone: UTC\n    hours: {mon: 09:00-25:00}\npolicies: []\n", 4, "not a time of day"),
        ("calendars:\n  c:\n    timezone: UTC\n    hours: {funday: 09:00-17:00}\npolicies: []\n", 4, "'funday' is not a weekday"),
        ("calendars:\n  c:\n    timezone: UTC\n    hours: {mon: 09:00-17:00}\n    holidays: {country: XX}\npolicies: []\n", 5, "holidays: Country XX not available"),
        ("calendars:\n  c:\n    timezone: UTC\n    hours: {mon: 09:00-17:00}\n    holidays: {dates: [2026-13-01]}\npolicies: []\n", 5, "is not a date"),
        ("policies: []\n", 1, "non-empty list"),
        ("polices:\n  - name: a\n", 1, "unknown key 'polices'"),
        ("policies:\n  - name: a\n    targets:\n      first_reply: {target: 1h, pause_on: [solved]}\n", 4, "cannot pause on 'solved'"),
        ("policies:\n  - name: a\n    targets:\n      first_reply: {target: 1h, time: business}\n", 4, "names no business calendar"),
        ("policies:\n  - name: a\n    targets:\n      first_reply: 400d\n", 4, "longer than the longest target"),
        ("policies:\n  - name: a\n    calendar: [office]\n    targets: {first_reply: 1h}\n", 3, "unknown calendar"),
        (
            "calendars:\n  c:\n    timezone: UTC\n    hours: {mon: 09:00-17:00}\npolicies:\n  - name: a\n    targets:\n"
            "      first_reply:\n        target: 1h\n        time: calendar\n        calendar: c\n",
            11, "counts calendar time, so it cannot name calendar 'c'",
        ),
    ],
)
def test_an_invalid_file_is_refused_with_its_line_and_reason(text, line, reason):
    with pytest.raises(RulesFileError) as refused:
        parse_policies(text)
    assert refused.value.line == line, str(refused.value)
    assert reason in refused.value.reason


def test_the_error_names_the_file(tmp_path):
    path = tmp_path / "sla.yaml"
    path.write_text("policies:\n  - name: a\n    targets:\n      first_reply: soon\n")
    with pytest.raises(RulesFileError, match=rf"{path}:4: 'soon' is not a duration"):
        load_policies(path)
    with pytest.raises(RulesFileError, match="cannot read it"):
        load_policies(tmp_path / "missing.yaml")


def test_the_digest_changes_with_what_the_policies_mean_not_with_how_the_file_is_written():
    digest = parse_policies(GOOD).digest
    reformatted = "# the same policies, written differently\n" + GOOD.replace("first_reply: 1d", "first_reply: 86400")
    assert parse_policies(reformatted).digest == digest
    assert parse_policies(GOOD.replace("first_reply: 1d", "first_reply: 2d")).digest != digest
    assert parse_policies(GOOD.replace("daily: 22:00-06:00", "daily: 21:00-06:00")).digest != digest, "a calendar's hours"
    assert parse_policies(GOOD.replace("warnings: [0.5, 75%, 0.9]", "warnings: [0.5, 0.9]")).digest != digest

"""Insights' pure parts: facts folded from events in any order, replayed or not, and the report math."""

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.insights import domain
from shared.clock import to_ms
from tests import insights_scenario as scenario


def facts_of(published) -> dict[str, dict]:
    states: dict[str, dict] = {}
    for _, event in published:
        ticket_id = event.data.ticket_id
        states[ticket_id] = domain.fold(states.get(ticket_id, domain.new_state()), event.id, event.data)
    return {ticket_id: domain.fact_document(ticket_id, state) for ticket_id, state in states.items()}


def test_a_fact_is_what_its_events_say() -> None:
    facts = facts_of(scenario.events("p"))
    t1, t3, t5, t8 = facts["p-t1"], facts["p-t3"], facts["p-t5"], facts["p-t8"]
    assert (t1["channel"], t1["priority"], t1["tier"], t1["customer_id"], t1["language"]) == ("email", "high", "vip", "p-c1", "en")
    assert (t1["first_reply_seconds"], t1["first_reply_business_seconds"], t1["first_reply_outcome"]) == (7200, 7000, "breached")
    assert (t1["resolution_seconds"], t1["resolution_business_seconds"], t1["resolution_outcome"]) == (20000, 18000, "achieved")
    assert (t1["csat_score"], t1["csat_comment"], t1["nps_score"], t1["policy"]) == (5, "said 5", 10, "vip")
    assert (t3["solved_ms"], t3["reopens"], t3["resolution_outcome"], t3["resolution_business_seconds"]) == (None, 1, "running", None)
    assert t5["agent_id"] == "p-A" and [a["agent_id"] for a in t5["assignees"]] == ["p-B", "p-A"] and t5["reassignments"] == 1
    assert t5["wait_seconds"] == 1000
    assert t8["priority"] == "urgent"
    assert facts["p-t2"]["csat_score"] == 4  # the later rating replaces the first
    assert facts["p-t9"]["escalations"] == 2
    assert [entry["metric"] for entry in facts["p-t6"]["at_risk"]] == ["first_reply"]
    assert facts["p-t9"]["at_risk_due_ms"] is None  # running, never warned


def test_facts_converge_whatever_the_order_and_however_often_events_come() -> None:
    published = scenario.events("p")
    expected = facts_of(published)
    shuffler = random.Random(15)
    for _ in range(5):
        replayed = published + shuffler.sample(published, len(published) // 2)
        shuffler.shuffle(replayed)
        assert facts_of(replayed) == expected


def test_a_fact_without_its_creation_stays_out_of_reports() -> None:
    published = [(topic, event) for topic, event in scenario.events("p") if event.data.ticket_id == "p-t1"]
    fact = facts_of(published[1:])["p-t1"]
    assert fact["sort_key"] is None and fact["created_ms"] is None and fact["first_reply_outcome"] == "breached"


def test_figures_of_a_group() -> None:
    facts = list(facts_of(scenario.events("p")).values())
    thresholds = [60, 300, 900]
    row: dict = {"created": len(facts)}  # what the database's $group and per-threshold counts give, in Python
    for name, accumulator in domain.row_fields().items():
        if "$push" in accumulator:
            row[name] = [fact[accumulator["$push"][1:]] for fact in facts]
        elif isinstance(accumulator["$sum"], str):
            row[name] = sum(fact[accumulator["$sum"][1:]] or 0 for fact in facts)
    for limit in thresholds:
        row[f"wait_within_{limit}"] = sum(fact["wait_seconds"] is not None and fact["wait_seconds"] <= limit for fact in facts)
    assert domain.figures(row, thresholds) == scenario.EXPECTED_TOTAL


def test_percentile_is_the_nearest_rank() -> None:
    assert domain.percentile([], 0.5) is None
    assert domain.percentile([5.0], 0.9) == 5.0
    assert domain.percentile([1, 2, 3, 4], 0.5) == 2
    assert domain.percentile(list(range(1, 11)), 0.9) == 9


def test_quarter_hours_roll_up_into_new_yorks_days_across_the_change_to_summer_time() -> None:
    new_york = ZoneInfo("America/New_York")

    def day_of(utc: str) -> str:
        return domain.time_label("day", to_ms(datetime.fromisoformat(utc)) // domain.QUARTER_MS, new_york)

    assert day_of("2025-03-09T04:45:00+00:00") == "2025-03-08"  # 23:45 EST
    assert day_of("2025-03-09T05:00:00+00:00") == "2025-03-09"  # midnight EST
    assert day_of("2025-03-10T03:45:00+00:00") == "2025-03-09"  # 23:45 EDT
    assert day_of("2025-03-10T04:00:00+00:00") == "2025-03-10"  # midnight EDT
    sunday = to_ms(datetime.fromisoformat("2025-03-09T12:00:00+00:00")) // domain.QUARTER_MS
    assert domain.time_label("week", sunday, new_york) == "2025-03-03"
    assert domain.time_label("hour", sunday, new_york) == "08"
    kolkata = to_ms(datetime.fromisoformat("2025-03-09T18:15:00+00:00")) // domain.QUARTER_MS  # 23:45 at +05:30
    assert domain.time_label("day", kolkata, ZoneInfo("Asia/Kolkata")) == "2025-03-09"


def test_rows_merge_by_adding_sums_and_joining_pushed_values() -> None:
    merged = domain.merge_rows([{"_id": 1, "created": 2, "values": [1.0]}, {"_id": 2, "created": 3, "values": [None, 2.0]}])
    assert merged == {"created": 5, "values": [1.0, None, 2.0]}


@pytest.mark.parametrize(
    ("text", "problem"),
    [("60,x", "whole seconds"), ("300,60", "increasing"), ("0", "positive"), (",".join(map(str, range(1, 13))), "up to 10")],
)
def test_wrong_wait_thresholds_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        domain.split_thresholds(text)

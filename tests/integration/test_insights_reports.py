"""Insights end to end: the seeded scenario's events published on the real broker, read back as reports.

Its own platform runs the infrastructure and insights alone: on the session-wide one, routing would
assign the scenario's tickets and SLA would run clocks of its own for them, and the figures would no
longer be the hand-computed ones. Events are published topic by topic, SLA's and routing's before
the tickets were created, then all of them again in another order: the figures stay the same.
"""

import csv
import io
import random
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from shared import topics
from shared.launcher.platform import Platform, Ports, embedded_environ
from tests import insights_scenario as scenario
from tests.browser import chromium_page
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

TOPIC_ORDER = (topics.SLA, topics.ROUTING, topics.NOTIFICATIONS, topics.TICKETS)
"""The order the first publication follows: every ticket's clocks and assignments before its creation."""


@pytest.fixture(scope="module")
def insights_platform(tmp_path_factory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("insights"), Ports.free(), environ=embedded_environ())
    platform.start(services=("insights",))
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="module")
async def seeded(insights_platform: Platform) -> AsyncIterator[tuple[httpx.AsyncClient, str, list]]:
    prefix = unique("ins")
    published = scenario.events(prefix)
    await publish(insights_platform, sorted(published, key=lambda item: TOPIC_ORDER.index(item[0])))
    client = httpx.AsyncClient(
        base_url=insights_platform.url("insights"), headers={"Authorization": f"Bearer {insights_platform.api_key}"}, timeout=20
    )
    await eventually(lambda: solved_so_far(client, expected=scenario.EXPECTED_TOTAL["solved"]), timeout=60)
    await eventually(lambda: consumed(insights_platform) >= len(published), timeout=60)
    yield client, prefix, published
    await client.aclose()


async def publish(platform: Platform, published) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{platform.ports.kafka}")
    await producer.start()
    try:
        for topic, event in published:
            await producer.send(topic, event.model_dump_json().encode(), key=event.subject.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def solved_so_far(client: httpx.AsyncClient, expected: int) -> bool:
    response = await client.get("/v1/reports/summary", params={"from": scenario.FROM, "to": scenario.TO})
    groups = response.json()["groups"]
    return bool(groups) and groups[0]["solved"] == expected and groups[0]["nps"]["responses"] == 4


def consumed(platform: Platform, outcomes: tuple[str, ...] = ("processed", "duplicate")) -> float:
    """Events insights' consumer has handled: the watermark that its figures are complete."""
    text = httpx.get(f"{platform.url('insights')}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "switchboard_events_consumed_total" and sample.labels.get("outcome") in outcomes
    )


async def summary(client: httpx.AsyncClient, **params) -> dict:
    response = await client.get("/v1/reports/summary", params={"from": scenario.FROM, "to": scenario.TO, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_summary_gives_the_hand_computed_figures(seeded) -> None:
    client, prefix, _ = seeded
    report = await summary(client, split_by_wait_time="60,300,900")
    assert [group.pop("group") for group in report["groups"]] == [None]
    assert report["groups"][0] == scenario.EXPECTED_TOTAL

    by_agent = {group["group"]: group for group in (await summary(client, group_by="agent"))["groups"]}
    assert list(by_agent) == [f"{prefix}-A", f"{prefix}-B", None]
    agent_a = by_agent[f"{prefix}-A"]
    assert (agent_a["created"], agent_a["sla"]["first_reply"]) == (
        6, {"achieved": 2, "breached": 3, "running": 1, "attainment_pct": 40.0}
    )
    assert agent_a["first_reply"]["calendar"] == {"p50": 4000.0, "p90": 7200.0, "mean": 3680.0, "count": 5}
    assert by_agent[f"{prefix}-B"]["sla"]["first_reply"]["attainment_pct"] == 100.0

    by_team = {group.pop("group"): group for group in (await summary(client, group_by="team"))["groups"]}
    assert list(by_team) == [f"{prefix}-blue", f"{prefix}-red", None]
    for agent, team in scenario.TEAM.items():  # each agent is their team's only member: the same figures
        assert by_team[f"{prefix}-{team}"] == {k: v for k, v in by_agent[f"{prefix}-{agent}"].items() if k != "group"}

    vip = (await summary(client, tier="vip", group_by="policy"))["groups"]
    assert [(group["group"], group["created"], group["csat"]["mean"]) for group in vip] == [("vip", 2, 4.5)]


async def test_days_are_the_time_zones_own_across_a_change_to_summer_time(seeded) -> None:
    client, _, _ = seeded
    new_york = await summary(client, group_by="day", tz="America/New_York", **{"from": "2025-03-07T00:00:00", "to": "2025-03-12T00:00:00"})
    assert {group["group"]: group["created"] for group in new_york["groups"]} == scenario.NEW_YORK_DAYS
    assert new_york["from"] == "2025-03-07T00:00:00-05:00" and new_york["to"] == "2025-03-12T00:00:00-04:00"
    utc = await summary(client, group_by="day")
    assert {group["group"]: group["created"] for group in utc["groups"]} == scenario.UTC_DAYS
    weeks = await summary(client, group_by="week", tz="America/New_York")
    assert {group["group"]: group["created"] for group in weeks["groups"]} == {"2025-03-03": 6, "2025-03-10": 4}


async def test_the_tickets_behind_a_figure_page_by_page_and_as_csv(seeded) -> None:
    client, prefix, _ = seeded
    params = {"from": scenario.FROM, "to": scenario.TO, "agent": f"{prefix}-A", "metric": "first_reply", "outcome": "breached"}
    first = (await client.get("/v1/reports/tickets", params={**params, "limit": 2})).json()
    assert [row["ticket_id"] for row in first["tickets"]] == [f"{prefix}-t1", f"{prefix}-t2"]
    assert first["tickets"][0]["first_reply_seconds"] == 7200 and first["tickets"][0]["created_at"] == "2025-03-08T03:00:00+00:00"
    second = (await client.get("/v1/reports/tickets", params={**params, "limit": 2, "cursor": first["next_cursor"]})).json()
    assert [row["ticket_id"] for row in second["tickets"]] == [f"{prefix}-t3"] and second["next_cursor"] is None

    response = await client.get("/v1/reports/tickets", params={**params, "tz": "America/New_York"}, headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["ticket_id"], row["first_reply_seconds"], row["first_reply_business_seconds"], row["created_at"]) for row in rows] == [
        (f"{prefix}-t1", "7200.0", "7000.0", "2025-03-07T22:00:00-05:00"),
        (f"{prefix}-t2", "5400.0", "5000.0", "2025-03-08T09:00:00-05:00"),
        (f"{prefix}-t3", "4000.0", "3900.0", "2025-03-08T23:30:00-05:00"),
    ]
    assert rows[0]["csat_score"] == "5" and rows[0]["nps_score"] == "10" and rows[0]["agent_id"] == f"{prefix}-A"


async def test_at_risk_lists_warned_running_clocks_soonest_first(seeded) -> None:
    client, prefix, _ = seeded
    listed = (await client.get("/v1/reports/at-risk", params={"tier": "standard"})).json()["tickets"]
    mine = [ticket["ticket_id"] for ticket in listed if ticket["ticket_id"].startswith(prefix)]
    assert mine == [f"{prefix}-t6", f"{prefix}-t10"]
    assert listed[0]["metrics"] == ["first_reply"] and listed[0]["due_at"] == "2025-03-10T04:30:00+00:00"


async def test_events_replayed_in_another_order_change_nothing(seeded, insights_platform: Platform) -> None:
    client, _, published = seeded
    before = await summary(client, group_by="agent", split_by_wait_time="60,300,900")
    replay = list(published)  # the same events (same ids), as a redelivery or a DLQ replay sends them
    random.Random(15).shuffle(replay)
    processed = consumed(insights_platform, ("processed",))
    await publish(insights_platform, replay)
    # No inbox drops them: each is folded again, and the fold makes that change nothing.
    await eventually(lambda: consumed(insights_platform, ("processed",)) >= processed + len(replay), timeout=60)
    assert await summary(client, group_by="agent", split_by_wait_time="60,300,900") == before


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"from": "2025-03-12T00:00:00Z", "to": "2025-03-07T00:00:00Z"}, "from must be before to"),
        ({"from": "2023-01-01T00:00:00Z", "to": "2025-03-07T00:00:00Z"}, "at most 400 days"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"from": "0001-01-01T00:00:00", "to": "0001-01-02T00:00:00", "tz": "America/New_York"}, "between 1970 and 9000"),
        ({"split_by_wait_time": "300,60"}, "increasing"),
    ],
)
async def test_bad_parameters_say_what_is_wrong(seeded, params: dict, message: str) -> None:
    client, _, _ = seeded
    response = await client.get("/v1/reports/summary", params=params)
    assert response.status_code == 422 and message in response.json()["message"], response.text


async def test_reports_need_a_key(insights_platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=insights_platform.url("insights")) as anonymous:
        assert (await anonymous.get("/v1/reports/summary")).status_code == 401
        assert (await anonymous.get("/")).status_code == 200


async def test_the_board_shows_the_seeded_figures_in_a_real_browser(seeded, insights_platform: Platform) -> None:
    _, prefix, _ = seeded
    async with chromium_page() as browser:
        page = browser.page
        await page.goto(f"{insights_platform.url('insights')}/?until=2025-03-12&tz=America/New_York")
        assert "API key" in await page.locator("#key-help").inner_text()
        await page.fill("#key", "not-a-key")
        await page.click("#key-form button[type=submit]")
        await page.wait_for_function("document.getElementById('status').textContent === 'failed'", timeout=15_000)
        assert "401" in await page.locator("#error").inner_text() and await page.locator("#key-help").is_visible()
        await page.fill("#key", insights_platform.api_key)
        await page.click("#key-form button[type=submit]")
        await page.wait_for_function("document.getElementById('status').textContent.startsWith('updated')", timeout=15_000)
        shown = {name: await page.locator(f"#{name}").inner_text() for name in ("today-created", "today-solved", "sla-first_reply", "sla-resolution")}
        assert shown == {"today-created": "2", "today-solved": "0", "sla-first_reply": "57.1%", "sla-resolution": "83.3%"}
        trends = [row.split("\t") for row in await page.locator("#trend-table tbody tr").all_inner_texts()]
        assert trends == [["2025-03-03", "3.67", "3", "0", "4"], ["2025-03-10", "–", "0", "–", "0"]]
        at_risk = await page.locator("#at-risk tbody tr td:first-child").all_inner_texts()
        assert at_risk == [f"{prefix}-t6", f"{prefix}-t10"]
        risk_table = await page.locator("#at-risk").bounding_box()
        risk_card = await page.locator("#at-risk").locator("xpath=..").bounding_box()
        assert risk_table["width"] <= risk_card["width"], "the at-risk list is clipped"  # every column shows
        assert not await page.locator("#key-help").is_visible()  # a working key needs no more explaining
        assert await page.locator("#by-hour svg rect").count() == 7  # the hours (NY) of the 7 tickets replied to
        assert insights_platform.api_key not in page.url and browser.refused == []
        assert await page.evaluate("sessionStorage.getItem('switchboard-insights-key')") == insights_platform.api_key
        await browser.screenshot("insights-board")

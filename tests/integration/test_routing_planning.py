"""Planning on the live platform: agents take and solve tickets submitted through intake, routing records the
period, and a simulation replaying it with the roster that worked it reproduces the recorded waits."""

import asyncio
import json
import random
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.browser import chromium_page

from shared import topics
from shared.clock import utc_now
from tests.support import RunningPlatform, eventually, unique

pytestmark = pytest.mark.integration

AGENTS, SLOTS = 12, 3
ARRIVALS_PER_SECOND, ARRIVAL_SECONDS = 7.0, 15
HANDLE_SECONDS = (5.0, 8.0)
"""Each agent works a ticket this long (uniform), from seeing its assignment to solving it."""
TARGET_SECONDS = 20  # an edge of the history's histogram: the recorded share within it is exact
ASSIGNED = "support.ticket.assigned.v1"


async def assignments(running: RunningPlatform) -> AIOKafkaConsumer:
    """A reader of routing's events from their end as it is now."""
    reader = AIOKafkaConsumer(bootstrap_servers=running.bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    partitions = [TopicPartition(topics.ROUTING, p) for p in reader.partitions_for_topic(topics.ROUTING) or [0]]
    reader.assign(partitions)
    await reader.seek_to_end(*partitions)
    for partition in partitions:
        await reader.position(partition)
    return reader


async def work_tickets(running: RunningPlatform, reader: AIOKafkaConsumer, agents: set[str], rng: random.Random,
                       solved: list[str]) -> None:
    """The agents: each ticket assigned to one of them is solved through intake after its handle time."""
    async with running.client("intake") as intake:

        async def solve(ticket_id: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            response = await intake.patch(f"/v1/tickets/{ticket_id}", json={"status": "solved"})
            solved.append(ticket_id if response.status_code == 200 else f"{ticket_id}: {response.text}")

        working: list[asyncio.Task] = []
        try:
            while True:
                batches = await reader.getmany(timeout_ms=200)
                for record in (r for batch in batches.values() for r in batch):
                    event = json.loads(record.value)
                    if event["type"] == ASSIGNED and event["data"]["agent_id"] in agents:
                        working.append(asyncio.create_task(solve(event["data"]["ticket_id"], rng.uniform(*HANDLE_SECONDS))))
        finally:
            for task in working:
                task.cancel()


async def leave(running: RunningPlatform, agents) -> None:
    """Offline, so that no later test's ticket goes to them."""
    async with running.client("routing") as routing:
        for agent in agents:
            await routing.patch(f"/v1/agents/{agent}", json={"status": "offline"})


async def test_replaying_a_recorded_period_with_its_roster_reproduces_its_waits(running_platform):
    running = running_platform
    skill = unique("planning").replace("-", "_")
    agents = {unique("planner") for _ in range(AGENTS)}
    rng = random.Random(16)
    reader = await assignments(running)
    solved: list[str] = []
    worker = asyncio.create_task(work_tickets(running, reader, agents, rng, solved))
    try:
        for agent in sorted(agents):
            await running.put_agent(agent, skills={skill: 1}, capacity={"chat": SLOTS})
        await asyncio.sleep(1)  # anything left waiting by other tests that these agents can take is taken before

        started = utc_now()
        offsets, at = [], 0.0
        while (at := at + rng.expovariate(ARRIVALS_PER_SECOND)) < ARRIVAL_SECONDS:
            offsets.append(at)
        async with running.client("intake") as intake:

            async def submit(offset: float) -> str:
                await asyncio.sleep(offset)
                response = await intake.post("/v1/tickets", json={
                    "channel": "chat", "customer": {"id": unique("cust"), "email": "ann@example.com"},
                    "subject": "Planning", "body": "A ticket of the recorded period.", "required_skills": [skill],
                })
                assert response.status_code == 201, response.text
                return response.json()["id"]

            ticket_ids = await asyncio.gather(*[submit(offset) for offset in offsets])
        try:
            await eventually(lambda: set(ticket_ids) <= set(solved), timeout=40)
        except TimeoutError:
            raise AssertionError(f"{len(ticket_ids)} submitted; solved: {solved}") from None

        async with running.client("routing") as routing:

            async def recorded_row():
                answer = (await routing.get("/v1/planning/history", params={
                    "from": (started - timedelta(minutes=15)).isoformat(), "to": utc_now().isoformat(),
                    "interval": 60})).json()
                rows = [row for interval in answer["intervals"] for row in interval["by_channel_and_skills"]
                        if row["skills"] == skill]
                handled = sum(row["handle_time"]["count"] for row in rows)
                return rows if handled >= len(ticket_ids) else None

            rows = await eventually(recorded_row, timeout=15)
            ended = utc_now()
            waits = [row["wait"] for row in rows]
            count = sum(wait["count"] for wait in waits)
            recorded_mean = sum(wait["mean_seconds"] * wait["count"] for wait in waits) / count
            within = sum(n for wait in waits for label, n in wait["histogram"].items()
                         if label.startswith("le_") and float(label[3:]) <= TARGET_SECONDS)
            recorded_within = within / count

            shift = {"start": (started - timedelta(hours=1)).isoformat(), "end": (ended + timedelta(hours=1)).isoformat()}
            replay = {
                "roster": [{"id": agent, "skills": {skill: 1}, "capacity": {"chat": SLOTS}, "shifts": [shift]}
                           for agent in sorted(agents)],
                "period": {"start": started.isoformat(), "end": ended.isoformat()},
                "arrivals": {"recorded": True},
                "handle_times": {"recorded": True},
                "latency": "recorded",
                "target_seconds": TARGET_SECONDS,
            }
            response = await routing.post("/v1/planning/simulations", json=replay)
            assert response.status_code == 202, response.text
            job = response.json()["id"]

            async def finished():
                view = (await routing.get(f"/v1/planning/simulations/{job}")).json()
                return view if view["status"] != "running" else None

            result = await eventually(finished, timeout=20)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await reader.stop()
        await leave(running, agents)

    assert result["status"] == "done", result
    summary = result["result"]["summary"]
    assert summary["tickets"] == len(ticket_ids) == count
    assert recorded_mean > 1.0, "the period should have queued enough for waits to mean something"
    print(f"recorded: mean wait {recorded_mean:.2f} s, {recorded_within:.1%} within {TARGET_SECONDS} s; replayed: {summary}")
    assert summary["wait_mean_seconds"] == pytest.approx(recorded_mean, rel=0.10), (summary, recorded_mean)
    # A share: within 10 points (the 20 s target sits in the upper part of these waits, not at a tail).
    assert summary["within_target"] == pytest.approx(recorded_within, abs=0.10), (summary, recorded_within)


async def test_planning_refuses_bad_input_and_keys_without_the_scope(running_platform):
    async with running_platform.client("routing") as routing:
        start = utc_now()
        shift = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
        empty = await routing.post("/v1/planning/simulations", json={
            "roster": [{"id": "nobody", "skills": {"billing": 1}, "capacity": 1, "shifts": [shift]}],
            "period": {"start": "2001-01-01T00:00:00Z", "end": "2001-01-01T01:00:00Z"},
            "arrivals": {"recorded": True}, "handle_times": {"mean_seconds": 60},
        })
        staffing = await routing.get("/v1/planning/staffing", params={
            "arrivals": "100", "aht_seconds": 180, "interval": 30, "target_seconds": 20, "service_level": 0.8})
        unknown = await routing.get("/v1/planning/simulations/" + "0" * 32)
        keyless = await routing.get("/v1/planning/history", params={"from": "2026-01-01T00:00:00Z",
                                                                    "to": "2026-01-02T00:00:00Z"},
                                    headers={"Authorization": ""})

    assert empty.status_code == 422 and "empty period" in empty.json()["message"]
    assert staffing.status_code == 200
    assert staffing.json()["intervals"][0]["agents"] == 14
    assert unknown.status_code == 404
    assert keyless.status_code == 401


async def test_the_planning_page_draws_what_a_day_needed_against_the_agents_it_had(running_platform):
    running = running_platform
    skill = unique("page").replace("-", "_")
    agent = unique("page-agent")
    await running.put_agent(agent, skills={skill: 1}, capacity=1)
    submitted = [await running.submit_ticket(channel="chat", required_skills=[skill]) for _ in range(2)]
    await running.wait_for_assignee(submitted[0]["id"])
    created = datetime.fromisoformat(submitted[0]["created_at"])
    interval = f"{created:%H}:{created.minute // 15 * 15:02d}"

    async with chromium_page() as browser:
        page = browser.page
        await page.goto(running.platform.url("routing") + "/planning")
        await page.fill("#key", running.platform.api_key)
        await page.fill("#date", utc_now().date().isoformat())
        await page.fill("#aht", "600")
        await page.select_option("#basis", "recorded")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#chart svg polyline")
        status = await page.inner_text("#status")
        bars = await page.locator("#chart svg rect.available").count()
        cells = await page.locator("#table tbody tr", has_text=interval).first.locator("td").all_inner_texts()
        await browser.screenshot("routing-planning-page")
        url = page.url
    await leave(running, [agent])

    assert "peak" in status and "arrivals recorded that day" in status, status
    assert bars >= 1  # intervals with agents available
    _, arrivals, needed, _, available = cells
    # Available: recorded for the interval (its agent-seconds so far, which round to 0 early in it), not "–".
    assert float(arrivals) >= 2 and int(needed) >= 1 and float(available) >= 0, cells
    assert running.platform.api_key not in url
    assert browser.refused == []


async def test_a_simulation_is_stored_so_it_can_be_cancelled_and_read_back(running_platform):
    start = utc_now().replace(microsecond=0)
    period = {"start": start.isoformat(), "end": (start + timedelta(hours=8)).isoformat()}
    simulation = {
        "roster": [{"id": "sim-ann", "skills": {"billing": 1}, "capacity": 1, "shifts": [period]}],
        "period": period,
        "arrivals": {"rates": [{"channel": "chat", "skills": {"billing": 1}, "per_interval": [2500] * 32}]},
        "handle_times": {"distribution": "exponential", "mean_seconds": 300},
    }
    async with running_platform.client("routing") as routing:
        started = await routing.post("/v1/planning/simulations", json=simulation)
        assert started.status_code == 202, started.text
        job = started.json()["id"]
        asked = await routing.delete(f"/v1/planning/simulations/{job}")

        async def ended():
            view = (await routing.get(f"/v1/planning/simulations/{job}")).json()
            return view if view["status"] != "running" else None

        stopped = await eventually(ended, timeout=20)
        again = await routing.delete(f"/v1/planning/simulations/{job}")
        unknown = await routing.delete("/v1/planning/simulations/" + "0" * 32)

    assert asked.status_code == 200 and asked.json()["status"] == "running"
    assert stopped["status"] == "cancelled" and "result" not in stopped and stopped["progress"] < 1
    assert again.json()["status"] == "cancelled"  # an ended job stays as it is
    assert unknown.status_code == 404

"""SLA clocks on the running platform: events on support.sla.v1, the GET answer, timers that fire on time
and once, across a crash and with two replicas. Uses a policy file with targets of a few seconds."""

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from services.sla.repository import SlaTransaction
from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import (
    Channel,
    Customer,
    Priority,
    TicketCreated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketSolved,
    TicketStatusChanged,
)
from tests.support import RunningPlatform, eventually, started_platform

pytestmark = pytest.mark.integration

TEST_POLICIES = textwrap.dedent(
    """\
    policies:
      - name: fast
        match: {priority: urgent}
        warnings: [0.5]
        targets:
          first_reply: 3s
          resolution: {target: 120s, pause_on: [pending]}
      - name: replies
        match: {priority: low}
        targets:
          next_reply: 1h
      - name: slow
        warnings: [0.5]
        targets:
          first_reply: 1h
          next_reply: 1h
          resolution: {target: 2h, pause_on: [pending, on_hold]}
    """
)


@pytest.fixture(scope="module")
def sla_platform(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("sla-platform")
    policies = data_dir / "policies.yaml"
    policies.write_text(TEST_POLICIES)
    with started_platform(data_dir, SLA_POLICIES_PATH=str(policies)) as running:
        asyncio.run(_warm_up(running))
        yield running


async def _warm_up(running: RunningPlatform) -> None:
    """Ready is not yet consuming: wait until sla has joined its consumer group and handles a ticket, so the
    timing assertions below measure the timers, not the first rebalance."""
    ticket = ticket_id()
    await publish(running, created(ticket))
    await sla_events(running, ticket, lambda es: of_type(es, "clock_started"), timeout=60)


def ticket_id() -> str:
    return f"TKT-SLA-{uuid.uuid4().hex[:10]}"


async def publish(running: RunningPlatform, payload) -> None:
    event = new_event(payload, source="switchboard/intake", subject=payload.ticket_id)
    await running.publish(topics.TICKETS, event.to_json(), key=payload.ticket_id.encode())


def created(ticket: str, priority: Priority = Priority.NORMAL) -> TicketCreated:
    return TicketCreated(
        ticket_id=ticket, channel=Channel.API, customer=Customer(id="sla-test"), subject="SLA test",
        priority=priority, required_skills=[], created_at=utc_now(),
    )


async def sla_events(running: RunningPlatform, ticket: str, until, timeout: float = 30) -> list[dict]:
    events = await running.events(
        topics.SLA, until=lambda events: until([e for e in events if e["subject"] == ticket]), timeout=timeout
    )
    return [e for e in events if e["subject"] == ticket]


async def all_fired_and_published(running: RunningPlatform, clock_id: str) -> bool:
    """The watermark for "no further SLA event": the clock has nothing left to fire, and every event sla
    decided is on its topic."""
    client = AsyncMongoClient(running.platform.mongodb_url("sla"), tz_aware=True)
    try:
        clock = await SlaTransaction(client["switchboard_sla"], None).clocks.clock(clock_id)
    finally:
        await client.close()
    return clock.next_fire_ms is None and await running.outbox_drained("sla")


def of_type(events: list[dict], kind: str, metric: str | None = None) -> list[dict]:
    return [e for e in events if e["type"] == f"support.sla.{kind}.v1" and (metric is None or e["data"]["metric"] == metric)]


async def clocks(running: RunningPlatform, ticket: str) -> dict[str, dict]:
    async with running.client("sla") as sla:
        response = await sla.get(f"/v1/tickets/{ticket}/sla")
    assert response.status_code == 200, response.text
    return {clock["metric"]: clock for clock in response.json()["clocks"]}


def parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


async def test_an_unanswered_urgent_ticket_is_warned_at_half_time_then_breached_on_time(sla_platform):
    ticket = {"id": ticket_id()}
    await publish(sla_platform, created(ticket["id"], Priority.URGENT))

    events = await sla_events(sla_platform, ticket["id"], lambda es: of_type(es, "breached"))
    [started] = of_type(events, "clock_started", "first_reply")
    [warning] = of_type(events, "warning", "first_reply")
    [breached] = of_type(events, "breached", "first_reply")
    assert started["data"]["policy"] == "fast" and started["data"]["target_seconds"] == 3
    assert warning["data"]["threshold"] == 0.5
    due = parse(breached["data"]["due_at"])
    assert due == parse(started["data"]["due_at"])
    # Fired on time: the event was made within a second of the due instant (the p99 target; a loaded
    # CI machine gets some slack here, the histogram on /metrics tells the real figure).
    assert timedelta(0) <= parse(breached["time"]) - due < timedelta(seconds=2.5)
    assert parse(breached["time"]) - parse(warning["time"]) > timedelta(seconds=1)

    view = await clocks(sla_platform, ticket["id"])
    assert view["first_reply"]["state"] == "breached" and view["first_reply"]["remaining_seconds"] < 0
    assert view["resolution"]["state"] == "running" and view["resolution"]["policy"] == "fast"
    async with sla_platform.client("sla") as sla:
        metrics = (await sla.get("/metrics")).text
        policies = (await sla.get("/v1/policies")).json()
    assert 'switchboard_sla_breaches_total{metric="first_reply",priority="urgent"}' in metrics
    assert 'switchboard_sla_warnings_total{metric="first_reply"}' in metrics
    assert "switchboard_sla_timer_lateness_seconds_bucket" in metrics
    assert [policy["name"] for policy in policies["policies"]] == ["fast", "replies", "slow"]


async def test_replies_pauses_and_solving_drive_the_clocks_and_internal_notes_do_not(sla_platform):
    ticket = ticket_id()
    start = utc_now()
    await publish(sla_platform, created(ticket))
    await publish(sla_platform, TicketMessageAdded(ticket_id=ticket, message_id="m1", author_type="agent", public=False,
                                                   body="internal", added_at=start + timedelta(seconds=1)))
    await publish(sla_platform, TicketMessageAdded(ticket_id=ticket, message_id="m2", author_type="agent", public=True,
                                                   body="Hello", added_at=start + timedelta(seconds=2)))
    await publish(sla_platform, TicketMessageAdded(ticket_id=ticket, message_id="m3", author_type="customer",
                                                   public=True, body="Still broken", added_at=start + timedelta(seconds=3)))
    await publish(sla_platform, TicketStatusChanged(ticket_id=ticket, previous_status="open", status="pending",
                                                    changed_at=start + timedelta(seconds=4)))

    events = await sla_events(sla_platform, ticket, lambda es: len(of_type(es, "clock_paused")) >= 2)
    [first_done] = of_type(events, "fulfilled", "first_reply")
    assert first_done["data"]["elapsed_seconds"] == pytest.approx(2, abs=0.01)
    assert first_done["data"]["breached"] is False
    assert len(of_type(events, "clock_started", "next_reply")) == 1
    assert {e["data"]["metric"] for e in of_type(events, "clock_paused")} == {"next_reply", "resolution"}
    view = await clocks(sla_platform, ticket)
    assert view["first_reply"]["state"] == "fulfilled"
    assert view["resolution"]["state"] == "paused" and view["resolution"]["elapsed_seconds"] == pytest.approx(4, abs=0.01)
    assert view["resolution"]["due_at"] is None

    await publish(sla_platform, TicketStatusChanged(ticket_id=ticket, previous_status="pending", status="open",
                                                    changed_at=start + timedelta(seconds=10)))
    await publish(sla_platform, TicketSolved(ticket_id=ticket, solved_at=start + timedelta(seconds=12)))
    events = await sla_events(sla_platform, ticket, lambda es: of_type(es, "fulfilled", "resolution"))
    [resolved] = of_type(events, "fulfilled", "resolution")
    assert resolved["data"]["elapsed_seconds"] == pytest.approx(6, abs=0.01), "4 s before pending, 2 s after it"
    assert len(of_type(events, "clock_resumed")) == 2
    view = await clocks(sla_platform, ticket)
    assert {clock["state"] for clock in view.values()} == {"fulfilled"}


async def test_a_priority_change_applies_the_new_policys_target_and_keeps_the_time_elapsed(sla_platform):
    ticket = ticket_id()
    opened = created(ticket)
    await publish(sla_platform, opened)
    await sla_events(sla_platform, ticket, lambda es: of_type(es, "clock_started", "first_reply"))
    assert (await clocks(sla_platform, ticket))["first_reply"]["policy"] == "slow"

    changed_at = opened.created_at + timedelta(seconds=2)
    await publish(sla_platform, TicketPriorityChanged(ticket_id=ticket, previous_priority=Priority.NORMAL,
                                                      priority=Priority.URGENT, changed_at=changed_at))
    events = await sla_events(sla_platform, ticket, lambda es: of_type(es, "breached", "first_reply"))

    [breached] = of_type(events, "breached", "first_reply")
    assert breached["data"]["policy"] == "fast" and breached["data"]["target_seconds"] == 3
    # The 2 s that passed under the old policy count: 3 s after creation, not after the change.
    assert parse(breached["data"]["due_at"]) == opened.created_at + timedelta(seconds=3)
    view = await clocks(sla_platform, ticket)
    assert (view["first_reply"]["policy"], view["resolution"]["target_seconds"]) == ("fast", 120)


async def test_a_ticket_raised_to_a_policy_with_a_metric_it_had_no_clock_for_starts_that_clock_from_creation(
    sla_platform,
):
    ticket = ticket_id()
    opened = created(ticket, Priority.LOW)
    await publish(sla_platform, opened)
    await sla_events(sla_platform, ticket, lambda es: of_type(es, "clock_started", "next_reply"))
    assert set(await clocks(sla_platform, ticket)) == {"next_reply"}, "the replies policy has no first_reply"

    await publish(sla_platform, TicketPriorityChanged(ticket_id=ticket, previous_priority=Priority.LOW,
                                                      priority=Priority.URGENT,
                                                      changed_at=opened.created_at + timedelta(seconds=1)))
    events = await sla_events(sla_platform, ticket, lambda es: of_type(es, "breached", "first_reply"))

    [started] = of_type(events, "clock_started", "first_reply")
    [breached] = of_type(events, "breached", "first_reply")
    assert started["data"]["policy"] == "fast"
    # Unanswered since creation: the second before the change counts, so 3 s after creation, not after the change.
    assert parse(started["data"]["started_at"]) == opened.created_at
    assert parse(started["data"]["due_at"]) == parse(breached["data"]["due_at"]) == opened.created_at + timedelta(seconds=3)
    view = await clocks(sla_platform, ticket)
    assert (view["first_reply"]["state"], view["resolution"]["policy"]) == ("breached", "fast")
    assert parse(view["resolution"]["started_at"]) == opened.created_at
    assert view["next_reply"]["policy"] == "replies", "a metric the new policy has no target for keeps its own"


async def test_an_event_for_an_unknown_ticket_is_dead_lettered_with_its_reason(sla_platform):
    replied, solved = ticket_id(), ticket_id()
    await publish(sla_platform, TicketMessageAdded(ticket_id=replied, message_id="m1", author_type="customer",
                                                   public=True, body="Hello?", added_at=utc_now()))
    await publish(sla_platform, TicketSolved(ticket_id=solved, solved_at=utc_now()))

    def sla_dead_letters(records, ghost: str):
        return [r for r in records if r.key == ghost.encode() and dict(r.headers).get("dlq-consumer-group") == b"switchboard-sla"]

    dead = await sla_platform.read_topic(
        topics.dead_letter(topics.TICKETS),
        until=lambda records: all(sla_dead_letters(records, ghost) for ghost in (replied, solved)),
    )
    for ghost, kind in ((replied, b"message_added"), (solved, b"solved")):
        [record] = sla_dead_letters(dead, ghost)
        headers = dict(record.headers)
        assert f"rejected: unknown ticket {ghost}".encode() in headers["dlq-error"]
        assert headers["dlq-attempts"] == b"1" and kind in record.value


async def test_firers_racing_for_the_same_due_clock_announce_each_step_once(sla_platform):
    """The running sla and two more firers in this process (no lease: only the conditional write
    between them) all fire the same warning and then the same breach at their due instants."""
    from prometheus_client import CollectorRegistry

    from services.sla.domain import SlaRules
    from services.sla.metrics import SlaMetrics
    from services.sla.policy import parse_policies
    from services.sla.timers import Timers
    from shared.clock import now_ms
    from shared.mongo import UnitOfWork
    from shared.outbox import Outbox

    platform = sla_platform.platform
    ticket = ticket_id()
    await publish(sla_platform, created(ticket, Priority.URGENT))
    await sla_events(sla_platform, ticket, lambda es: of_type(es, "clock_started", "first_reply"))

    client = AsyncMongoClient(platform.mongodb_url("sla"), tz_aware=True)
    try:
        db = client["switchboard_sla"]
        lock = platform.data_dir / "mongo" / "switchboard_sla.lock"
        racers = [
            Timers(UnitOfWork(client, db, Outbox(db).write, transaction_lock=lock, transaction_type=SlaTransaction),
                   SlaRules(parse_policies(TEST_POLICIES)),
                   lease=None, metrics=SlaMetrics(CollectorRegistry()), source="switchboard/sla")
            for _ in range(2)
        ]
        repository = SlaTransaction(db, None).clocks
        seen_version = 0
        for _ in range(2):  # the warning, then the breach
            async with asyncio.timeout(10):
                while (clock := await repository.clock(f"{ticket}:first_reply")).version == seen_version:
                    await asyncio.sleep(0.05)
            seen_version = clock.version
            if clock.next_fire_ms is None:
                break  # the running sla already fired both
            for racer in racers:
                racer.horizon.load([(clock.next_fire_ms, clock.id, clock.version)], clock.next_fire_ms)
            await asyncio.sleep(max(clock.next_fire_ms - now_ms(), 0) / 1000)
            await asyncio.gather(*(racer.fire_due() for racer in racers))
        live = await db["clocks"].count_documents({"stopped": False})
        assert (await db["stats"].find_one({"_id": "live_clocks"}))["n"] == live, "the live-clocks counter is exact"
    finally:
        await client.close()
    await eventually(lambda: all_fired_and_published(sla_platform, f"{ticket}:first_reply"))

    events = [e for e in await sla_platform.events_to_end(topics.SLA) if e["subject"] == ticket]
    # At most one warning: if sla consumed the ticket late, the warning was already overdue beside the breach.
    assert len(of_type(events, "warning", "first_reply")) <= 1
    assert len(of_type(events, "breached", "first_reply")) == 1


async def test_a_breach_due_while_sla_is_down_fires_once_when_it_is_back_and_a_second_replica_never_repeats_it(
    sla_platform,
):
    platform = sla_platform.platform
    ticket = ticket_id()
    await publish(sla_platform, created(ticket, Priority.URGENT))
    await sla_events(sla_platform, ticket, lambda es: of_type(es, "clock_started", "first_reply"))

    platform.kill("sla")  # SIGKILL: the warning (1.5 s) and the breach (3 s) fall due while it is down
    await asyncio.sleep(4)
    second, _ = await asyncio.to_thread(platform.start_replica, "sla")
    try:
        await asyncio.to_thread(platform.respawn, "sla")
        await sla_events(sla_platform, ticket, lambda es: of_type(es, "breached"), timeout=40)
        await eventually(lambda: all_fired_and_published(sla_platform, f"{ticket}:first_reply"))
        events = [e for e in await sla_platform.events_to_end(topics.SLA) if e["subject"] == ticket]
    finally:
        await asyncio.to_thread(platform.terminate, second)

    # One decision, one event id: the restarted process re-publishes its recent outbox at start (the
    # embedded broker's replay), which consumers drop by id, so count ids, not records.
    assert len({e["id"] for e in of_type(events, "breached", "first_reply")}) == 1
    assert of_type(events, "warning") == [], "an overdue warning is not sent beside the breach it led to"


def test_an_invalid_policy_file_stops_sla_at_start_with_the_line_and_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: x\n    targets:\n      first_reply: soonish\n")
    env = {**os.environ, "SLA_POLICIES_PATH": str(bad), "MONGODB_URL": "mongodb://127.0.0.1:1",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "services.sla"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"sla cannot start: invalid SLA policy file: {bad}:4: 'soonish' is not a duration" in result.stderr

"""Crashes and restarts: nothing acknowledged is lost, and no side effect happens twice."""

import asyncio
import json
import uuid
from collections import defaultdict

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.kafka_admin import end_offsets
from shared.launcher.platform import Platform, Ports, embedded_environ
from tests.support import RunningPlatform, eventually, started_platform

pytestmark = pytest.mark.integration

ASSIGNED = "support.ticket.assigned.v1"
CREATED = "support.ticket.created.v1"


async def event_ids_per_ticket(
    running_platform: RunningPlatform, topic: str, event_type: str, ticket_ids: set[str], expected: int
) -> dict:
    """ticket id -> the distinct `event_type` event ids seen for it on `topic`.

    Distinct ids, because an outbox relay may publish the same event again after a crash (consumers'
    inboxes drop it); a second side effect would be a second event id."""
    seen: dict[str, set[str]] = defaultdict(set)

    def complete(events: list[dict]) -> bool:
        seen.clear()
        for event in events:
            if event["type"] == event_type and event["subject"] in ticket_ids:
                seen[event["subject"]].add(event["id"])
        return len(seen) >= expected

    await running_platform.events(topic, until=complete, timeout=60)
    return dict(seen)


async def wait_until_assigned(running_platform: RunningPlatform, ticket_ids: list[str], count: int) -> None:
    async with running_platform.client("intake") as intake:
        async with asyncio.timeout(90):
            while True:
                tickets = [(await intake.get(f"/v1/tickets/{t}")).json() for t in ticket_ids]
                if sum(1 for t in tickets if t["assignee_id"]) >= count:
                    return
                await asyncio.sleep(0.5)


async def test_routing_killed_mid_stream_assigns_every_ticket_once_and_overfills_nobody(running_platform):
    skill = f"fault-{uuid.uuid4().hex[:8]}"
    agents = [f"agent-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for agent in agents:
        await running_platform.put_agent(agent, skills={skill: 1}, capacity=5)  # 20 slots for 30 tickets

    ticket_ids = []
    for number in range(30):
        if number == 10:
            running_platform.platform.kill("routing")  # SIGKILL while tickets are flowing
        ticket_ids.append((await running_platform.submit_ticket(required_skills=[skill]))["id"])
        await asyncio.sleep(0.05)
    running_platform.platform.respawn("routing")

    await wait_until_assigned(running_platform, ticket_ids, 20)
    await eventually(lambda: running_platform.outbox_drained("routing"))  # a double assignment would be out now
    async with running_platform.client("routing") as routing:
        loads = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]
    assigned = await event_ids_per_ticket(running_platform, topics.ROUTING, ASSIGNED, set(ticket_ids), expected=20)

    assert loads == [5, 5, 5, 5], "every slot is used and no agent is over capacity"
    assert len(assigned) == 20
    assert all(len(event_ids) == 1 for event_ids in assigned.values()), "a ticket was assigned twice"

    for agent in agents:  # room for the 10 still waiting
        await running_platform.put_agent(agent, skills={skill: 1}, capacity=8)
    await wait_until_assigned(running_platform, ticket_ids, 30)
    assigned = await event_ids_per_ticket(running_platform, topics.ROUTING, ASSIGNED, set(ticket_ids), expected=30)
    async with running_platform.client("routing") as routing:
        loads = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]

    assert sum(loads) == 30 and max(loads) <= 8
    assert all(len(event_ids) == 1 for event_ids in assigned.values())

    # What routing acknowledged is durable: crash its database server too, and look again.
    running_platform.platform.kill("mongodb_routing")
    running_platform.platform.respawn("mongodb_routing")
    async with running_platform.client("routing") as routing:
        async with asyncio.timeout(30):
            while (await routing.get(f"/v1/agents/{agents[0]}")).status_code != 200:
                await asyncio.sleep(0.5)
        loads_after_crash = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]
    assert loads_after_crash == loads


def submit_command(customer_id: str) -> bytes:
    """A `ticket.submit` from an outside system, with its own CloudEvents id."""
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "crm", "type": "support.ticket.submit.v1",
        "subject": customer_id, "correlationid": customer_id,
        "data": {"channel": "api", "customer": {"id": customer_id}, "subject": "Parcel lost", "body": "Where is it?"},
    }).encode()


async def wait_until_acknowledged(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    """Until `group` has committed every partition of `topic` up to its end: nothing is left to redeliver."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await offsets.start()
    try:
        await offsets.topics()
        partitions = [TopicPartition(topic, p) for p in offsets.partitions_for_topic(topic)]
        end = await end_offsets(offsets, partitions)
        async with asyncio.timeout(timeout):
            while True:
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
                if all(end[tp] == 0 or (tp in committed and committed[tp].offset >= end[tp]) for tp in partitions):
                    return
                await asyncio.sleep(0.5)
    finally:
        await offsets.stop()
        await admin.close()


async def submit_with_key(intake: httpx.AsyncClient, customer_id: str) -> str | None:
    """POST with the customer's id as Idempotency-Key: the ticket id answered, or None if the answer was lost."""
    ticket = {"channel": "web", "customer": {"id": customer_id}, "subject": "Refund", "body": "Charged twice"}
    try:
        response = await intake.post("/v1/tickets", json=ticket, headers={"Idempotency-Key": customer_id})
    except httpx.TransportError:
        return None
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def stream_killing_intake(running: RunningPlatform, intake: httpx.AsyncClient, by_command: list[str],
                                by_http: list[str]) -> dict[str, str | None]:
    """Commands on the inbound topic, each acknowledged by the broker, and HTTP submissions among them;
    intake is killed in the middle and stays down for the rest. Returns each HTTP submission's answer."""
    answers = {}
    producer = AIOKafkaProducer(bootstrap_servers=running.bootstrap)
    await producer.start()
    try:
        stride = len(by_command) // len(by_http)
        for n, customer_id in enumerate(by_command):
            if n % stride == 0:
                answers[by_http[n // stride]] = asyncio.create_task(submit_with_key(intake, by_http[n // stride]))
            if n == len(by_command) // 2:
                running.platform.kill("intake")  # SIGKILL: no shutdown code runs; the rest of the stream finds it down
            await producer.send_and_wait(topics.INBOUND, submit_command(customer_id), key=customer_id.encode())
            await asyncio.sleep(0.03)
    finally:
        await producer.stop()
    return {customer_id: await answer for customer_id, answer in answers.items()}


async def test_intake_killed_mid_stream_opens_one_ticket_per_command_and_per_idempotency_key(tmp_path):
    """On a platform of its own: intake is killed and stays down for a while, which would hold up
    other tests on the shared platform."""
    run = uuid.uuid4().hex[:8]
    by_command = [f"cmd-{run}-{n}" for n in range(60)]  # one customer per command and per HTTP submission
    by_http = [f"http-{run}-{n}" for n in range(20)]
    with started_platform(tmp_path / "data") as running:
        async with running.client("intake") as intake:
            answers = await stream_killing_intake(running, intake, by_command, by_http)
            running.platform.respawn("intake")
            resent = {customer_id: await submit_with_key(intake, customer_id) for customer_id in by_http}
            await wait_until_acknowledged(running.bootstrap, "switchboard-intake", topics.INBOUND)
            tickets = {}
            for customer_id in by_command + by_http:
                page = (await intake.get("/v1/tickets", params={"customer_id": customer_id})).json()
                tickets[customer_id] = [ticket["id"] for ticket in page["tickets"]]
        ticket_ids = {ids[0] for ids in tickets.values() if ids}
        created = await event_ids_per_ticket(running, topics.TICKETS, CREATED, ticket_ids, expected=len(ticket_ids))

    assert None in answers.values(), "the crash must have lost some answers"
    assert {customer_id: ids for customer_id, ids in tickets.items() if len(ids) != 1} == {}, "one ticket each"
    assert all(resent[c] == tickets[c][0] and answers[c] in (None, resent[c]) for c in by_http), "one ticket per key"
    assert created.keys() == ticket_ids and len(ticket_ids) == len(by_command) + len(by_http)
    assert {ticket_id: ids for ticket_id, ids in created.items() if len(ids) != 1} == {}, "one ticket.created each"


async def test_starting_again_on_the_same_data_dir_keeps_every_ticket(tmp_path):
    data_dir = tmp_path / "data"
    first = RunningPlatform(Platform(data_dir, Ports.free(), environ=embedded_environ()))
    first.platform.start()
    try:
        skill = "restart-skill"
        waiting = await first.submit_ticket(required_skills=[skill])
        kept = await first.submit_ticket()
        sent_before = created_records(
            await first.events(topics.TICKETS, until=lambda events: bool(created_records(events, kept["id"])), timeout=30),
            kept["id"],
        )
    finally:
        first.platform.stop()

    second = RunningPlatform(Platform(data_dir, Ports.free(), environ=embedded_environ()))
    second.platform.start()
    try:
        async with second.client("intake") as intake:
            response = await intake.get(f"/v1/tickets/{kept['id']}")
        assert response.status_code == 200 and response.json()["subject"] == kept["subject"]

        # Routing learns of the ticket it had queued before the restart, and assigns it.
        await second.put_agent("after-restart", skills={skill: 1}, capacity=1)
        assert await second.wait_for_assignee(waiting["id"]) == "after-restart"
        async def acknowledgement_recorded_as_sent() -> bool:
            """It may still have been queued at the stop; once recorded as sent, it is never sent again."""
            async with second.client("notify") as notify:
                found = (await notify.get("/v1/notifications", params={"ticket_id": kept["id"]})).json()
            return any(n["kind"] == "acknowledgement" and n["state"] == "sent" for n in found["notifications"])

        await eventually(acknowledgement_recorded_as_sent, timeout=90)
        acknowledgements = [m for m in second.mail() if kept["id"] in m["Subject"]]
        assert len(acknowledgements) == 1, "events replayed after the restart must not send mail again"

        # The broker kept what intake had sent, so intake's start sent none of it again. Intake relays
        # in creation order: once a ticket opened after the restart is on the topic, a replay would be too.
        later = await second.submit_ticket()
        created = await second.events(
            topics.TICKETS, until=lambda events: any(e["subject"] == later["id"] for e in events), timeout=30
        )
        assert created_records(created, kept["id"]) == sent_before
    finally:
        second.platform.stop()


def created_records(events: list[dict], ticket_id: str) -> int:
    """How many `ticket.created` records of the ticket are on the topic (a relay that crashed between
    publishing and marking may have sent one twice; a replay on start would add more)."""
    return sum(1 for event in events if event["type"] == CREATED and event["subject"] == ticket_id)

"""Crashes and restarts: nothing acknowledged is lost, and no side effect happens twice."""

import asyncio
import uuid
from collections import defaultdict

import pytest

from shared import topics
from shared.launcher.platform import Platform, Ports
from tests.support import RunningPlatform

pytestmark = pytest.mark.integration


async def assignments_of(running_platform: RunningPlatform, ticket_ids: set[str], expected: int) -> dict:
    """ticket id -> the distinct ticket.assigned event ids seen for it on the routing topic."""
    seen: dict[str, set[str]] = defaultdict(set)

    def complete(events: list[dict]) -> bool:
        seen.clear()
        for event in events:
            if event["type"] == "support.ticket.assigned.v1" and event["subject"] in ticket_ids:
                seen[event["subject"]].add(event["id"])
        return len(seen) >= expected

    await running_platform.events(topics.ROUTING, until=complete, timeout=60)
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
    await asyncio.sleep(2)  # a double assignment, if any, would show up now
    async with running_platform.client("routing") as routing:
        loads = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]
    assigned = await assignments_of(running_platform, set(ticket_ids), expected=20)

    assert loads == [5, 5, 5, 5], "every slot is used and no agent is over capacity"
    assert len(assigned) == 20
    assert all(len(event_ids) == 1 for event_ids in assigned.values()), "a ticket was assigned twice"

    for agent in agents:  # room for the 10 still waiting
        await running_platform.put_agent(agent, skills={skill: 1}, capacity=8)
    await wait_until_assigned(running_platform, ticket_ids, 30)
    assigned = await assignments_of(running_platform, set(ticket_ids), expected=30)
    async with running_platform.client("routing") as routing:
        loads = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]

    assert sum(loads) == 30 and max(loads) <= 8
    assert all(len(event_ids) == 1 for event_ids in assigned.values())

    # What routing acknowledged is durable: crash the database server too, and look again.
    running_platform.platform.kill("mongodb")
    running_platform.platform.respawn("mongodb")
    async with running_platform.client("routing") as routing:
        async with asyncio.timeout(30):
            while (response := await routing.get(f"/v1/agents/{agents[0]}")).status_code != 200:
                await asyncio.sleep(0.5)
        loads_after_crash = [(await routing.get(f"/v1/agents/{agent}")).json()["load"] for agent in agents]
    assert loads_after_crash == loads


async def test_starting_again_on_the_same_data_dir_keeps_every_ticket(tmp_path):
    data_dir = tmp_path / "data"
    first = RunningPlatform(Platform(data_dir, Ports.free()))
    first.platform.start()
    try:
        skill = "restart-skill"
        waiting = await first.submit_ticket(required_skills=[skill])
        kept = await first.submit_ticket()
    finally:
        first.platform.stop()

    second = RunningPlatform(Platform(data_dir, Ports.free()))
    second.platform.start()
    try:
        async with second.client("intake") as intake:
            response = await intake.get(f"/v1/tickets/{kept['id']}")
        assert response.status_code == 200 and response.json()["subject"] == kept["subject"]

        # Routing learns of the ticket it had queued before the restart, and assigns it.
        await second.put_agent("after-restart", skills={skill: 1}, capacity=1)
        assert await second.wait_for_assignee(waiting["id"]) == "after-restart"
        async with asyncio.timeout(20):
            while kept["id"] not in " ".join(m["Subject"] for m in second.mail()):
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        acknowledgements = [m for m in second.mail() if kept["id"] in m["Subject"]]
        assert len(acknowledgements) == 1, "events replayed after the restart must not send mail again"
    finally:
        second.platform.stop()

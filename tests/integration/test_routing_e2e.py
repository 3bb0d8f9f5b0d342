"""Routing end to end: offers, presence, reassignment, queue order, escalation, visibility, two replicas.

One platform for this module, started the way `switchboard up` starts it, with a short offer
timeout and a fast escalation workflow. Tickets are published as `ticket.created` events on
`support.tickets.v1`, the way any producer may, so these tests exercise routing's public
contract on its own; each test uses its own skills and agents.
"""

import asyncio
import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import (
    AgentStatusChanged,
    Customer,
    SlaWarning,
    TicketClosed,
    TicketCreated,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
)
from tests.support import RunningPlatform, eventually, started_platform, unique

pytestmark = pytest.mark.integration

OFFER_TIMEOUT_SECONDS = 3
DECLINE_COOLDOWN_SECONDS = 5
ESCALATION = {
    "steps": [
        {"after_seconds": 2, "action": "relax_skill_level", "levels": 1},
        {"after_seconds": 4, "action": "widen_to_l2"},
        {"after_seconds": 3600, "action": "supervisor_queue"},
    ]
}
SOURCE = "tests/routing"


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    settings = {
        "OFFER_TIMEOUT_SECONDS": str(OFFER_TIMEOUT_SECONDS),
        "OFFER_DECLINE_COOLDOWN_SECONDS": str(DECLINE_COOLDOWN_SECONDS),
        "QUEUE_SWEEP_INTERVAL_SECONDS": "0.5",
        "ESCALATION_JSON": json.dumps(ESCALATION),
        "UNASSIGN_ON_PRESENCE": "offline",
        "KAFKA_TOPIC_PARTITIONS": "3",  # so a second replica's consumer takes partitions too, as on a cluster
    }
    with started_platform(tmp_path_factory.mktemp("routing"), **settings) as platform:
        yield platform



# --- helpers --------------------------------------------------------------------------------------


async def publish(running: RunningPlatform, *items: tuple[str, object, str]) -> None:
    """(topic, payload, subject) as CloudEvents, in one producer session."""
    producer = AIOKafkaProducer(bootstrap_servers=running.bootstrap)
    await producer.start()
    try:
        for topic, payload, subject in items:
            event = new_event(payload, source=SOURCE, subject=subject)
            await producer.send_and_wait(topic, event.to_json(), key=subject.encode())
    finally:
        await producer.stop()


def created(ticket_id: str, *skills: str, priority="normal", channel="web", age_seconds=0.0, language=None,
            levels=None, previous_agent_id=None, customer_id=None) -> tuple[str, TicketCreated, str]:
    payload = TicketCreated(
        ticket_id=ticket_id,
        channel=channel,
        customer=Customer(id=customer_id or unique("cust"), email="ann@example.com"),
        subject="Help",
        priority=priority,
        required_skills=list(skills),
        required_skill_levels=levels or {},
        created_at=utc_now() - timedelta(seconds=age_seconds),
        language=language,
        previous_agent_id=previous_agent_id,
    )
    return (topics.TICKETS, payload, ticket_id)


async def put_agent(running: RunningPlatform, agent_id: str, **profile) -> dict:
    body = {"name": agent_id, "skills": {}, "capacity": 1, "status": "available", **profile}
    async with running.client("routing") as routing:
        response = await routing.put(f"/v1/agents/{agent_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def patch_agent(running: RunningPlatform, agent_id: str, status: str) -> httpx.Response:
    async with running.client("routing") as routing:
        return await routing.patch(f"/v1/agents/{agent_id}", json={"status": status})


async def get(running: RunningPlatform, path: str) -> httpx.Response:
    async with running.client("routing") as routing:
        return await routing.get(path)



async def ticket_state(running: RunningPlatform, ticket_id: str) -> dict | None:
    response = await get(running, f"/v1/tickets/{ticket_id}")
    return response.json() if response.status_code == 200 else None


async def wait_state(running: RunningPlatform, ticket_id: str, state: str, *, assignee=None, timeout=30) -> dict:
    async def check():
        view = await ticket_state(running, ticket_id)
        if view and view["state"] == state and (assignee is None or view["assignee_id"] == assignee):
            return view
        return None

    try:
        return await eventually(check, timeout)
    except TimeoutError:
        raise AssertionError(f"{ticket_id} not {state}/{assignee}: {await ticket_state(running, ticket_id)}") from None


async def routing_events(running: RunningPlatform, ticket_ids: set[str], *, until=lambda events: True,
                         timeout: float = 20) -> list[dict]:
    def mine(events):
        return [e for e in events if e["subject"] in ticket_ids]

    events = await running.events(topics.ROUTING, until=lambda events: until(mine(events)), timeout=timeout)
    return mine(events)


def of_type(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["type"] == f"support.ticket.{name}.v1"]


async def open_offer(running: RunningPlatform, agent_id: str, timeout: float = 20) -> dict:
    async def check():
        offers = (await get(running, f"/v1/agents/{agent_id}/offers")).json()
        return offers[0] if offers else None

    return await eventually(check, timeout)


async def metric(running: RunningPlatform, line_start: str) -> float:
    text = (await get(running, "/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


# --- offers ---------------------------------------------------------------------------------------


async def test_an_offer_is_accepted_and_the_ticket_assigned(routed):
    skill, agent = unique("offer"), unique("olga")
    await put_agent(routed, agent, skills={skill: 2}, capacity=2, mode="offer")
    ticket_id = unique("T")
    accepted_before = await metric(routed, 'switchboard_offers_total{outcome="accepted"}')
    await publish(routed, created(ticket_id, skill))

    offer = await open_offer(routed, agent)
    assert offer["ticket_id"] == ticket_id
    assert (await ticket_state(routed, ticket_id))["state"] == "offered"
    assert (await get(routed, f"/v1/agents/{agent}")).json()["load"] == 1, "an offer reserves the slot"

    async with routed.client("routing") as routing:
        accepted = await routing.post(f"/v1/offers/{offer['offer_id']}/accept")
        again = await routing.post(f"/v1/offers/{offer['offer_id']}/accept")
        unknown = await routing.post(f"/v1/offers/{uuid.uuid4().hex}/accept")
    assert accepted.status_code == 200 and accepted.json()["outcome"] == "accepted"
    assert again.status_code == 409 and "no longer open" in again.json()["detail"]
    assert unknown.status_code == 404

    await wait_state(routed, ticket_id, "assigned", assignee=agent)
    events = await routing_events(routed, {ticket_id}, until=lambda e: of_type(e, "assigned"))
    assert [e["type"].split(".")[2] for e in events] == ["offered", "offer_answered", "assigned"]
    assert of_type(events, "offer_answered")[0]["data"]["outcome"] == "accepted"
    assert "accepted an offer" in of_type(events, "assigned")[0]["data"]["reason"]
    assert await metric(routed, 'switchboard_offers_total{outcome="accepted"}') == accepted_before + 1


async def test_a_rejected_offer_goes_to_the_next_agent(routed):
    skill = unique("reject")
    first, second = unique("a-first"), unique("b-second")
    rejected_before = await metric(routed, 'switchboard_offers_total{outcome="rejected"}')
    await put_agent(routed, first, skills={skill: 1}, mode="offer")
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    offer = await open_offer(routed, first)
    await put_agent(routed, second, skills={skill: 1}, mode="offer")

    async with routed.client("routing") as routing:
        rejected = await routing.post(f"/v1/offers/{offer['offer_id']}/reject")
    assert rejected.status_code == 200 and rejected.json()["outcome"] == "rejected"

    next_offer = await open_offer(routed, second)
    assert next_offer["ticket_id"] == ticket_id and next_offer["offer_id"] != offer["offer_id"]
    assert (await get(routed, f"/v1/agents/{first}")).json()["load"] == 0, "the slot came back"
    events = await routing_events(routed, {ticket_id}, until=lambda e: len(of_type(e, "offered")) >= 2)
    assert [e["data"]["agent_id"] for e in of_type(events, "offered")] == [first, second]
    assert of_type(events, "offer_answered")[0]["data"]["outcome"] == "rejected"
    assert await metric(routed, 'switchboard_offers_total{outcome="rejected"}') == rejected_before + 1


async def test_an_unanswered_offer_expires_and_goes_to_the_next_agent(routed):
    skill = unique("timeout")
    first, second = unique("a-slow"), unique("b-next")
    expired_before = await metric(routed, 'switchboard_offers_total{outcome="expired"}')
    await put_agent(routed, first, skills={skill: 1}, mode="offer")
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    offer = await open_offer(routed, first)
    await put_agent(routed, second, skills={skill: 1})  # auto mode: takes it directly

    view = await wait_state(routed, ticket_id, "assigned", assignee=second, timeout=OFFER_TIMEOUT_SECONDS + 20)
    assert first in view["declined_by"]
    events = await routing_events(routed, {ticket_id}, until=lambda e: of_type(e, "assigned"))
    [answered] = of_type(events, "offer_answered")
    assert answered["data"]["outcome"] == "expired" and answered["data"]["offer_id"] == offer["offer_id"]
    assert await metric(routed, 'switchboard_offers_total{outcome="expired"}') >= expired_before + 1
    assert (await get(routed, f"/v1/agents/{first}")).json()["load"] == 0


async def test_the_only_agent_who_rejected_an_offer_is_offered_the_ticket_again_after_the_cooldown(routed):
    skill, agent = unique("cooldown"), unique("cora")
    await put_agent(routed, agent, skills={skill: 1}, mode="offer")
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    first = await open_offer(routed, agent)
    async with routed.client("routing") as routing:
        assert (await routing.post(f"/v1/offers/{first['offer_id']}/reject")).status_code == 200

    view = await wait_state(routed, ticket_id, "waiting")
    assert view["declined_by"] == [agent] and agent in view["declined_until"]
    await asyncio.sleep(1)
    assert (await get(routed, f"/v1/agents/{agent}/offers")).json() == [], "not within the cooldown"

    again = await open_offer(routed, agent, timeout=DECLINE_COOLDOWN_SECONDS + 20)
    assert again["ticket_id"] == ticket_id and again["offer_id"] != first["offer_id"]
    events = await routing_events(routed, {ticket_id}, until=lambda e: len(of_type(e, "offered")) >= 2)
    offered_at = [datetime.fromisoformat(e["time"]) for e in of_type(events, "offered")]
    assert offered_at[1] - offered_at[0] >= timedelta(seconds=DECLINE_COOLDOWN_SECONDS)
    assert "declined it before" in (await ticket_state(routed, ticket_id))["reason"]


# --- presence and reassignment ---------------------------------------------------------------------


async def test_an_agent_going_away_hands_back_their_open_offers_at_once(routed):
    skill = unique("away-offer")
    offered_to, backup = unique("a-away"), unique("b-backup")
    await put_agent(routed, backup, skills={skill: 1}, status="away")
    await put_agent(routed, offered_to, skills={skill: 1}, mode="offer")
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    offer = await open_offer(routed, offered_to)
    assert (await patch_agent(routed, backup, "available")).status_code == 200

    assert (await patch_agent(routed, offered_to, "away")).status_code == 200
    await wait_state(routed, ticket_id, "assigned", assignee=backup)
    assert (await get(routed, f"/v1/agents/{offered_to}/offers")).json() == []
    assert (await get(routed, f"/v1/agents/{offered_to}")).json()["load"] == 0
    events = await routing_events(routed, {ticket_id}, until=lambda e: of_type(e, "assigned"))
    [answered] = of_type(events, "offer_answered")
    assert (answered["data"]["offer_id"], answered["data"]["outcome"]) == (offer["offer_id"], "expired")
    answered_at, expires_at = (datetime.fromisoformat(t) for t in (answered["data"]["answered_at"], offer["expires_at"]))
    assert answered_at < expires_at, "handed back by the presence change, not by the timeout"
    assert (await get(routed, f"/v1/agents/{unique('nobody')}/offers")).status_code == 404


async def test_an_agent_going_offline_sends_their_tickets_back_with_their_age_and_others_take_them(routed):
    skill = unique("presence")
    leaving, staying = unique("leaving"), unique("staying")
    await put_agent(routed, leaving, skills={skill: 1}, capacity=2)
    tickets = [unique("T"), unique("T")]
    await publish(routed, *(created(t, skill, age_seconds=60) for t in tickets))
    before = [await wait_state(routed, t, "assigned", assignee=leaving) for t in tickets]

    assert (await patch_agent(routed, leaving, "offline")).status_code == 200
    waiting = [await wait_state(routed, t, "waiting") for t in tickets]
    assert [w["created_at"] for w in waiting] == [b["created_at"] for b in before], "original age kept"
    agent = (await get(routed, f"/v1/agents/{leaving}")).json()
    assert (agent["status"], agent["load"]) == ("offline", 0)

    await put_agent(routed, staying, skills={skill: 1}, capacity=2)
    for ticket_id in tickets:
        await wait_state(routed, ticket_id, "assigned", assignee=staying)
    events = await routing_events(routed, set(tickets), until=lambda e: len(of_type(e, "unassigned")) >= 2)
    assert all("offline" in e["data"]["reason"] and e["data"]["agent_id"] == leaving
               for e in of_type(events, "unassigned"))

    assert (await patch_agent(routed, unique("nobody"), "away")).status_code == 404
    bad = await patch_agent(routed, staying, "busy")
    assert bad.status_code == 422 and "status" in bad.json()["message"]


async def test_presence_events_from_a_workforce_system_apply_and_bad_ones_are_dead_lettered(routed):
    agent = unique("wfm")
    await put_agent(routed, agent, status="available")
    unknown = unique("ghost")
    await publish(
        routed,
        (topics.AGENTS, AgentStatusChanged(agent_id=agent, status="away", changed_at=utc_now()), agent),
        (topics.AGENTS, AgentStatusChanged(agent_id=unknown, status="away", changed_at=utc_now()), unknown),
        (topics.AGENTS, AgentStatusChanged(agent_id=agent, status="lunch", changed_at=utc_now()), agent),
    )

    async def away():
        return (await get(routed, f"/v1/agents/{agent}")).json()["status"] == "away"

    await eventually(away)

    def reasons(records):
        return [dict(r.headers)["dlq-error"].decode() for r in records if r.key in (agent.encode(), unknown.encode())]

    dead = await routed.read_topic(topics.dead_letter(topics.AGENTS), until=lambda r: len(reasons(r)) >= 2, timeout=30)
    found = reasons(dead)
    assert any(f"unknown agent {unknown}" in reason for reason in found)
    assert any("invalid status 'lunch'" in reason for reason in found)


async def test_a_stale_presence_event_is_acknowledged_and_ignored_and_counted(routed):
    agent, skill = unique("stale"), unique("stale")
    await put_agent(routed, agent, skills={skill: 1}, capacity=1)
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    await wait_state(routed, ticket_id, "assigned", assignee=agent)
    stale_before = await metric(routed, "switchboard_stale_presence_events_total")

    # Replayed from a DLQ, say: older than the PUT, it would send the agent offline and take the ticket away.
    replayed = AgentStatusChanged(agent_id=agent, status="offline", changed_at=utc_now() - timedelta(minutes=10))
    await publish(routed, (topics.AGENTS, replayed, agent))

    async def counted():
        return await metric(routed, "switchboard_stale_presence_events_total") >= stale_before + 1

    await eventually(counted)
    assert (await get(routed, f"/v1/agents/{agent}")).json()["status"] == "available"
    assert (await ticket_state(routed, ticket_id))["assignee_id"] == agent

    newer = AgentStatusChanged(agent_id=agent, status="away", changed_at=utc_now())
    await publish(routed, (topics.AGENTS, newer, agent))

    async def away():
        return (await get(routed, f"/v1/agents/{agent}")).json()["status"] == "away"

    await eventually(away)
    assert await metric(routed, "switchboard_stale_presence_events_total") == stale_before + 1
    dead = await routed.read_topic(topics.dead_letter(topics.AGENTS), timeout=3)
    assert not [r for r in dead if r.key == agent.encode()], "a stale event is not an error"


async def test_ticket_events_with_skills_not_valid_or_about_unknown_tickets_are_dead_lettered(routed):
    bad_skill, never_seen = unique("T-bad"), unique("T-unknown")
    await publish(
        routed,
        created(bad_skill, "Not A Skill!"),
        (topics.TICKETS, TicketSolved(ticket_id=never_seen, solved_at=utc_now()), never_seen),
    )

    def reasons(records):
        return {r.key.decode(): dict(r.headers)["dlq-error"].decode() for r in records
                if r.key in (bad_skill.encode(), never_seen.encode())
                and dict(r.headers)["dlq-consumer-group"] == b"switchboard-routing"}

    dead = await routed.read_topic(topics.dead_letter(topics.TICKETS), until=lambda r: len(reasons(r)) >= 2, timeout=30)
    found = reasons(dead)
    assert "skills not valid: 'Not A Skill!'" in found[bad_skill]
    assert f"unknown ticket {never_seen}" in found[never_seen]
    assert (await get(routed, f"/v1/tickets/{bad_skill}")).status_code == 404

    now = utc_now()
    await publish(routed, (topics.SLA, SlaWarning(ticket_id=never_seen, metric="first_reply", target_seconds=600,
                                                  threshold=0.75, due_at=now, remaining_seconds=0, warned_at=now),
                           never_seen))
    dead_sla = await routed.read_topic(topics.dead_letter(topics.SLA), until=lambda r: reasons(r), timeout=30)
    assert f"unknown ticket {never_seen}" in reasons(dead_sla)[never_seen]


async def test_solved_and_closed_free_capacity_and_the_queue_is_served_by_urgency_then_age(routed):
    skill, agent = unique("order"), unique("orla")
    await put_agent(routed, agent, skills={skill: 1}, capacity=1, status="away")
    oldest_low, middle_normal, newest_high = unique("T-low"), unique("T-normal"), unique("T-high")
    await publish(
        routed,
        created(newest_high, skill, priority="high", age_seconds=100),
        created(oldest_low, skill, priority="low", age_seconds=300),
        created(middle_normal, skill, priority="normal", age_seconds=200),
    )
    for ticket_id in (oldest_low, middle_normal, newest_high):
        await wait_state(routed, ticket_id, "waiting")
    now = utc_now()
    await publish(
        routed,
        (topics.TICKETS, TicketPriorityChanged(ticket_id=oldest_low, previous_priority="low", priority="urgent",
                                               changed_at=now), oldest_low),
        (topics.SLA, SlaWarning(ticket_id=middle_normal, metric="first_reply", target_seconds=600, threshold=0.75,
                                due_at=now + timedelta(seconds=150), remaining_seconds=150, warned_at=now),
         middle_normal),
    )

    async def reordered():
        low, normal = await ticket_state(routed, oldest_low), await ticket_state(routed, middle_normal)
        return low["priority"] == "urgent" and normal["sla_warned"]

    await eventually(reordered)
    queue = (await get(routed, "/v1/queues")).json()
    assert queue["by_skill"][skill] == 3 and queue["oldest_wait_seconds"] >= 290

    assert (await patch_agent(routed, agent, "available")).status_code == 200
    await wait_state(routed, oldest_low, "assigned", assignee=agent)  # urgent now
    assert (await ticket_state(routed, middle_normal))["state"] == "waiting"

    await publish(routed, (topics.TICKETS, TicketSolved(ticket_id=oldest_low, assignee_id=agent, solved_at=utc_now()),
                           oldest_low))
    await wait_state(routed, middle_normal, "assigned", assignee=agent)  # normal, warned: ahead of high
    assert (await ticket_state(routed, newest_high))["state"] == "waiting"

    await publish(routed, (topics.TICKETS, TicketClosed(ticket_id=middle_normal, closed_at=utc_now()), middle_normal))
    await wait_state(routed, newest_high, "assigned", assignee=agent)
    state = (await get(routed, f"/v1/agents/{agent}")).json()
    assert (state["load"], state["free"]) == (1, 0)


async def test_an_agent_who_gains_capacity_takes_the_next_waiting_ticket_at_once(routed):
    skill, agent = unique("grow"), unique("gus")
    await put_agent(routed, agent, skills={skill: 1}, capacity=1)
    older, newer = unique("T-older"), unique("T-newer")
    await publish(routed, created(older, skill, age_seconds=60), created(newer, skill, age_seconds=10))
    await wait_state(routed, older, "assigned", assignee=agent)
    await wait_state(routed, newer, "waiting")

    await put_agent(routed, agent, skills={skill: 1}, capacity={"web": 2})
    await wait_state(routed, newer, "assigned", assignee=agent)
    state = (await get(routed, f"/v1/agents/{agent}")).json()
    assert (state["load_by_channel"]["web"], state["free_by_channel"]["web"]) == (2, 0)


async def test_a_reopened_ticket_goes_back_to_its_previous_agent_when_they_can_take_it(routed):
    skill = unique("reopen")
    owner, other = unique("a-owner"), unique("b-other")
    await put_agent(routed, owner, skills={skill: 1}, capacity=1)
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill))
    await wait_state(routed, ticket_id, "assigned", assignee=owner)
    await put_agent(routed, other, skills={skill: 1}, capacity=1)

    await publish(routed, (topics.TICKETS, TicketSolved(ticket_id=ticket_id, assignee_id=owner, solved_at=utc_now()),
                           ticket_id))
    await wait_state(routed, ticket_id, "done")
    await publish(routed, (topics.TICKETS, TicketReopened(ticket_id=ticket_id, previous_assignee_id=owner,
                                                          reopened_at=utc_now()), ticket_id))
    view = await wait_state(routed, ticket_id, "assigned", assignee=owner)
    assert view["reason"].startswith("reopened: back to the previous agent")

    # The owner is away next time: the ticket goes to the queue and the other agent takes it.
    await publish(routed, (topics.TICKETS, TicketSolved(ticket_id=ticket_id, assignee_id=owner, solved_at=utc_now()),
                           ticket_id))
    await wait_state(routed, ticket_id, "done")
    assert (await patch_agent(routed, owner, "away")).status_code == 200
    await publish(routed, (topics.TICKETS, TicketReopened(ticket_id=ticket_id, previous_assignee_id=owner,
                                                          reopened_at=utc_now()), ticket_id))
    await wait_state(routed, ticket_id, "assigned", assignee=other)


# --- matching ---------------------------------------------------------------------------------------


async def test_language_channel_capacity_and_affinity_decide_who_gets_a_ticket(routed):
    skill = unique("match")
    german, english = unique("a-de"), unique("b-en")
    await put_agent(routed, german, skills={skill: 2}, languages=["de"], capacity={"chat": 1, "email": 2})
    await put_agent(routed, english, skills={skill: 2}, languages=["en"], capacity={"chat": 1, "email": 2})
    german_chat, german_chat_2, english_email, affine = unique("T"), unique("T"), unique("T"), unique("T")
    web = unique("T")

    await publish(routed, created(german_chat, skill, channel="chat", language="de-AT"))
    await wait_state(routed, german_chat, "assigned", assignee=german)
    await publish(routed, created(german_chat_2, skill, channel="chat", language="de"))
    await wait_state(routed, german_chat_2, "waiting")  # the German speaker's chat slot is taken
    await publish(routed, created(web, skill, channel="web"))
    await wait_state(routed, web, "waiting")  # nobody works the web channel

    await publish(routed, created(english_email, skill, channel="email", previous_agent_id=english))
    view = await wait_state(routed, english_email, "assigned", assignee=english)
    assert "affinity" in view["reason"] and "email load 0/2" in view["reason"]
    await publish(routed, created(affine, skill, channel="email", previous_agent_id=german))
    await wait_state(routed, affine, "assigned", assignee=german)

    agents = {a["id"]: a for a in (await get(routed, "/v1/agents?limit=1000")).json()["agents"]}
    assert agents[german]["load_by_channel"]["chat"] == 1 and agents[german]["free_by_channel"]["email"] == 1
    assert agents[english]["free_by_channel"] == {"web": 0, "email": 1, "chat": 1, "social": 0, "phone": 0, "api": 0}
    queue = (await get(routed, "/v1/queues")).json()
    assert queue["by_skill"][skill] == 2 and queue["by_channel"]["chat"] >= 1

    bad = await patch_agent(routed, german, "available")
    assert bad.status_code == 200
    async with routed.client("routing") as routing:
        negative = await routing.put(f"/v1/agents/{german}", json={"name": "x", "capacity": {"chat": -1}})
        no_such_channel = await routing.put(f"/v1/agents/{german}", json={"name": "x", "capacity": {"fax": 1}})
    assert negative.status_code == 422 and "capacity" in negative.json()["message"]
    assert no_such_channel.status_code == 422


async def test_escalation_relaxes_the_skill_level_then_widens_to_l2_and_publishes_each_step(routed):
    skill = unique("escalate")
    senior = unique("senior")
    await put_agent(routed, senior, skills={skill: 3}, tier="l2", capacity=1)
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill, levels={skill: 4}))

    view = await wait_state(routed, ticket_id, "assigned", assignee=senior, timeout=30)
    assert view["escalation_step"] >= 2
    events = await routing_events(routed, {ticket_id}, until=lambda e: of_type(e, "assigned"))
    steps = [(e["data"]["step"], e["data"]["action"]) for e in of_type(events, "escalated")]
    assert steps[:2] == [(1, "relax_skill_level"), (2, "widen_to_l2")]
    assert await metric(routed, "switchboard_escalations_total") >= 2


async def test_metrics_show_queue_depth_wait_time_assignments_and_offers(routed):
    skill, agent = unique("metrics"), unique("mia")
    depth_before = await metric(routed, 'switchboard_queue_depth{priority="low"}')
    waits_before = await metric(routed, "switchboard_queue_wait_seconds_count")
    waited_before = await metric(routed, "switchboard_queue_wait_seconds_sum")
    auto_before = await metric(routed, 'switchboard_assignments_total{mode="auto"}')
    ticket_id = unique("T")
    await publish(routed, created(ticket_id, skill, priority="low", age_seconds=30))
    await wait_state(routed, ticket_id, "waiting")

    async def counted():
        return await metric(routed, 'switchboard_queue_depth{priority="low"}') >= depth_before + 1

    await eventually(counted)
    await put_agent(routed, agent, skills={skill: 1})
    await wait_state(routed, ticket_id, "assigned", assignee=agent)
    assert await metric(routed, "switchboard_queue_wait_seconds_count") >= waits_before + 1
    assert await metric(routed, "switchboard_queue_wait_seconds_sum") >= waited_before + 30
    assert await metric(routed, 'switchboard_assignments_total{mode="auto"}') >= auto_before + 1
    text = (await get(routed, "/metrics")).text
    assert all(f'switchboard_offers_total{{outcome="{outcome}"}}' in text for outcome in ("accepted", "rejected", "expired"))


# --- concurrency and crashes -----------------------------------------------------------------------


async def test_two_replicas_under_load_never_double_assign_nor_overfill_a_channel(routed):
    replica, replica_url = await asyncio.to_thread(routed.platform.start_replica, "routing")
    try:
        async with httpx.AsyncClient(base_url=replica_url, headers=routed.headers, timeout=10) as second:
            skill = unique("replicas")
            capacity = {"chat": 2, "email": 1}
            agents = [unique("r") for _ in range(6)]  # 12 chat + 6 email slots
            for agent in agents:
                await put_agent(routed, agent, skills={skill: 1}, capacity=capacity, status="away")
            tickets = [(unique("T"), "chat" if n % 3 else "email") for n in range(30)]  # 20 chat, 10 email
            await publish(routed, *(created(t, skill, channel=channel) for t, channel in tickets))
            for ticket_id, _ in tickets:
                await wait_state(routed, ticket_id, "waiting")

            # Both replicas fill the agents at once: HTTP presence changes on each, plus the consumers.
            async with routed.client("routing") as first:
                await asyncio.gather(*(
                    client.patch(f"/v1/agents/{agent}", json={"status": "available"})
                    for agent in agents for client in (first, second)
                ))

            async def all_placed():
                views = [await ticket_state(routed, t) for t, _ in tickets]
                return views if sum(v["state"] == "assigned" for v in views) >= 18 else None

            views = await eventually(all_placed, timeout=60, interval=0.5)
            # Free some capacity on both replicas at once and let them race again for the rest.
            solved = [t for t, v in zip(tickets, views) if v["state"] == "assigned"][:6]
            await publish(routed, *((topics.TICKETS, TicketSolved(ticket_id=t, solved_at=utc_now()), t)
                                    for t, _ in solved))

            async def settled():
                views = {t: await ticket_state(routed, t) for t, _ in tickets}
                states = [v["state"] for v in views.values()]
                return views if (states.count("done"), states.count("assigned")) == (6, 18) else None

            views = await eventually(settled, timeout=60, interval=0.5)
            agent_states = [(await get(routed, f"/v1/agents/{a}")).json() for a in agents]
    finally:
        await asyncio.to_thread(routed.platform.terminate, replica)

    for agent in agent_states:
        assert agent["load_by_channel"].get("chat", 0) <= 2 and agent["load_by_channel"].get("email", 0) <= 1, agent
    held = defaultdict(lambda: defaultdict(int))
    for ticket_id, channel in tickets:
        view = views[ticket_id]
        if view["state"] == "assigned":
            held[view["assignee_id"]][channel] += 1
    for agent in agent_states:
        for channel in ("chat", "email"):
            assert agent["load_by_channel"].get(channel, 0) == held[agent["id"]][channel], agent
    assigned_events = await routing_events(
        routed, {t for t, _ in tickets}, until=lambda e: len(of_type(e, "assigned")) >= 24, timeout=30
    )
    per_ticket = defaultdict(set)
    for event in of_type(assigned_events, "assigned"):
        per_ticket[event["subject"]].add(event["id"])
    assert len(per_ticket) == 24, "18 slots filled, 6 freed by solving and filled again"
    assert all(len(ids) == 1 for ids in per_ticket.values()), "a ticket was assigned twice"


async def test_after_kill_9_the_queue_rebuilds_from_mongodb(routed):
    skill, agent = unique("crash"), unique("kim")
    tickets = [unique("T") for _ in range(3)]
    await publish(routed, *(created(t, skill, priority=p) for t, p in zip(tickets, ("low", "urgent", "normal"))))
    for ticket_id in tickets:
        await wait_state(routed, ticket_id, "waiting")

    routed.platform.kill("routing")
    routed.platform.respawn("routing")

    queue = (await get(routed, "/v1/queues")).json()
    assert queue["by_skill"][skill] == 3
    await put_agent(routed, agent, skills={skill: 1}, capacity=1)
    await wait_state(routed, tickets[1], "assigned", assignee=agent)  # the urgent one
    assert [(await ticket_state(routed, t))["state"] for t in (tickets[0], tickets[2])] == ["waiting", "waiting"]

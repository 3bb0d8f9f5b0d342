"""Routing's use cases against the real Mongo-wire server, without a broker: the queue and its claims.

A batch of `ticket.created` polled from several partitions arrives in any order; routing must
still serve the queue by urgency, then age, and never give one slot or one ticket twice,
even when two routing instances serve the same database at once.
"""

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from services.routing.bootstrap import RoutingUseCases, routing_use_cases
from services.routing.domain import AgentProfile, Mode, OfferClosed, Presence, RoutingConfig, UnknownAgent
from services.routing.metrics import RoutingMetrics
from services.routing.repository import RoutingTransaction
from shared.clock import now_ms, utc_now
from shared.envelope import new_event
from shared.events import (
    AgentStatusChanged,
    Customer,
    TicketCreated,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
)
from shared.mongo import UnitOfWork
from shared.outbox import Outbox
from shared.launcher.servers import mongo_wire_server

from tests.support import CommandNames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mongo_url(tmp_path_factory):
    data = tmp_path_factory.mktemp("routing-queue")
    with mongo_wire_server(data) as url:
        yield url, data


async def routing_on(
    url: str, lock_dir: Path, database: str, config: RoutingConfig = RoutingConfig(), *,
    metrics: RoutingMetrics | None = None, listeners=(),
) -> tuple[RoutingUseCases, UnitOfWork[RoutingTransaction], AsyncMongoClient]:
    client = AsyncMongoClient(url, tz_aware=True, event_listeners=list(listeners))
    db = client[database]
    uow = UnitOfWork(
        client, db, Outbox(db).write, transaction_lock=lock_dir / f"{database}.lock", transaction_type=RoutingTransaction
    )
    metrics = metrics or RoutingMetrics(CollectorRegistry())
    return routing_use_cases(uow, "switchboard/routing", metrics, config), uow, client


def available(name: str) -> AgentProfile:
    return AgentProfile(name=name, skills={"chat": 1}, capacity=1, status="available")


def created(ticket_id: str, skill: str, priority: str, age_minutes: int):
    return new_event(
        TicketCreated(ticket_id=ticket_id, channel="chat", customer=Customer(id=f"c-{ticket_id}"), subject="s",
                      priority=priority, required_skills=[skill], created_at=utc_now() - timedelta(minutes=age_minutes)),
        source="tests", subject=ticket_id,
    )


async def test_a_batch_from_several_partitions_is_served_in_queue_order_not_arrival_order(mongo_url):
    url, lock_dir = mongo_url
    routing, uow, client = await routing_on(url, lock_dir, "routing_batch")
    try:
        await routing.agents.put_agent("solo", available("Solo"))
        batch = [created("T-new-low", "chat", "low", 1), created("T-old-normal", "chat", "normal", 30),
                 created("T-urgent", "chat", "urgent", 2), created("T-new-normal", "chat", "normal", 5)]

        async def consume(tx):  # what the consumer does with one polled batch: one transaction
            for event in batch:
                await routing.tickets.on_ticket_created(tx, event)

        await uow.run(consume)
        await routing.dispatcher.drain(ticket_ids={event.subject for event in batch}, sweep=False)

        assert (await routing.views.ticket_view("T-urgent"))["assignee_id"] == "solo"
        assert [(await routing.views.ticket_view(t))["state"] for t in ("T-old-normal", "T-new-normal", "T-new-low")] == [
            "waiting", "waiting", "waiting"]

        summary = await routing.views.queue_summary()
        assert summary.depth == 3 and summary.by_priority["normal"] == 2 and summary.oldest_ticket_id == "T-old-normal"
    finally:
        await client.close()


async def test_two_instances_draining_at_once_fill_every_slot_exactly_once(mongo_url):
    url, lock_dir = mongo_url
    first, first_uow, first_client = await routing_on(url, lock_dir, "routing_race")
    second, _, second_client = await routing_on(url, lock_dir, "routing_race")
    try:
        for number in range(5):
            await first.agents.put_agent(f"a{number}", AgentProfile(name="A", skills={"race": 1}, capacity={"chat": 2},
                                                              status="away"))
        batch = [created(f"T{number:02d}", "race", "normal", 60 - number) for number in range(15)]

        async def consume(tx):
            for event in batch:
                await first.tickets.on_ticket_created(tx, event)

        await first_uow.run(consume)
        await asyncio.gather(*(
            routing.agents.set_presence(f"a{number}", Presence.AVAILABLE)
            for number in range(5) for routing in (first, second)
        ), first.dispatcher.drain(), second.dispatcher.drain())

        agents = [await first.views.get_agent(f"a{number}") for number in range(5)]
        views = [await first.views.ticket_view(f"T{number:02d}") for number in range(15)]
        assert [agent.load_by_channel["chat"] for agent in agents] == [2] * 5
        assigned = [view for view in views if view["state"] == "assigned"]
        assert len(assigned) == 10
        assert {view["ticket_id"] for view in assigned} == {f"T{number:02d}" for number in range(10)}, "oldest first"
        outbox = await first_client["routing_race"]["outbox"].find({"type": "support.ticket.assigned.v1"}).to_list()
        assert sorted(row["key"] for row in outbox) == sorted(view["ticket_id"] for view in assigned), "once each"
    finally:
        await first_client.close()
        await second_client.close()


async def test_a_reopened_ticket_whose_previous_agent_cannot_take_it_goes_to_another_agent_at_once(mongo_url):
    url, lock_dir = mongo_url
    routing, uow, client = await routing_on(url, lock_dir, "routing_reopen")
    try:
        await routing.agents.put_agent("owner", available("O"))
        event = created("T-reopen", "chat", "normal", 5)
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, event))
        await routing.dispatcher.drain(ticket_ids={"T-reopen"}, sweep=False)
        assert (await routing.views.ticket_view("T-reopen"))["assignee_id"] == "owner"

        solved = new_event(TicketSolved(ticket_id="T-reopen", solved_at=utc_now()), source="tests", subject="T-reopen")
        await uow.run(lambda tx: routing.tickets.on_solved(tx, solved))
        await routing.agents.set_presence("owner", Presence.AWAY)
        await routing.agents.put_agent("other", available("B"))
        reopened = new_event(TicketReopened(ticket_id="T-reopen", previous_assignee_id="owner", reopened_at=utc_now()),
                             source="tests", subject="T-reopen")
        await uow.run(lambda tx: routing.tickets.on_reopened(tx, reopened))

        served = await routing.dispatcher.drain(ticket_ids={"T-reopen"}, sweep=False)
        assert served == 1, "served by this wake-up, not a later sweep"
        view = await routing.views.ticket_view("T-reopen")
        assert (view["state"], view["assignee_id"]) == ("assigned", "other")
    finally:
        await client.close()


async def test_an_offer_cannot_be_accepted_once_its_timeout_passed_even_before_the_sweep(mongo_url):
    url, lock_dir = mongo_url
    config = RoutingConfig(mode=Mode.OFFER, offer_timeout=timedelta(seconds=0.3))
    routing, uow, client = await routing_on(url, lock_dir, "routing_offer_timeout", config)
    try:
        await routing.agents.put_agent("slow", available("S"))
        event = created("T-offer", "chat", "normal", 1)
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, event))
        await routing.dispatcher.drain(ticket_ids={"T-offer"}, sweep=False)
        [offer] = await routing.views.offers_for("slow")
        await asyncio.sleep(0.5)

        with pytest.raises(OfferClosed, match="expired"):
            await routing.offers.answer_offer(offer["offer_id"], accept=True)
        assert await routing.offers.expire_offers() == 1
        view = await routing.views.ticket_view("T-offer")
        assert (view["state"], view["declined_by"]) == ("waiting", ["slow"])
        assert (await routing.views.get_agent("slow")).load == 0
        with pytest.raises(UnknownAgent):
            await routing.views.offers_for("nobody")
    finally:
        await client.close()


def counted(counter) -> float:
    return sum(sample.value for sample in counter.collect()[0].samples if sample.name.endswith("_total"))


def status_changed(agent_id: str, status: str, changed_at):
    return new_event(AgentStatusChanged(agent_id=agent_id, status=status, changed_at=changed_at), source="tests",
                     subject=agent_id)


async def test_a_status_event_older_than_the_presence_in_force_is_acknowledged_and_ignored(mongo_url):
    url, lock_dir = mongo_url
    metrics = RoutingMetrics(CollectorRegistry())
    routing, uow, client = await routing_on(url, lock_dir, "routing_stale_presence", metrics=metrics)
    stale = metrics.stale_presence_events
    try:
        await routing.agents.put_agent("pia", available("P"))
        event = created("T-held", "chat", "normal", 1)
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, event))
        await routing.dispatcher.drain(ticket_ids={"T-held"}, sweep=False)
        put_at = (await routing.views.get_agent("pia")).presence_changed_at

        # Delayed from before the PUT: it would send the agent offline and unassign their ticket.
        delayed = status_changed("pia", "offline", put_at - timedelta(minutes=1))
        await uow.run(lambda tx: routing.agents.on_agent_status_changed(tx, delayed))
        agent = await routing.views.get_agent("pia")
        assert (agent.status, agent.presence_changed_at, counted(stale)) == (Presence.AVAILABLE, put_at, 1)
        assert (await routing.views.ticket_view("T-held"))["assignee_id"] == "pia"

        newer_at = utc_now() + timedelta(milliseconds=5)
        await asyncio.sleep(0.01)
        newer = status_changed("pia", "away", newer_at)
        await uow.run(lambda tx: routing.agents.on_agent_status_changed(tx, newer))
        agent = await routing.views.get_agent("pia")
        assert (agent.status, agent.presence_changed_at, counted(stale)) == (Presence.AWAY, newer_at, 1)

        await asyncio.sleep(0.01)
        await routing.agents.set_presence("pia", Presence.AVAILABLE)  # a PATCH made meanwhile wins over older events
        overtaken = status_changed("pia", "offline", newer_at + timedelta(milliseconds=1))
        await uow.run(lambda tx: routing.agents.on_agent_status_changed(tx, overtaken))
        assert ((await routing.views.get_agent("pia")).status, counted(stale)) == (Presence.AVAILABLE, 2)
        db = client["routing_stale_presence"]
        assert await db["outbox"].find({"type": "support.ticket.unassigned.v1"}).to_list() == [], "ticket kept"

        # An agent stored by an earlier release has no instant: any event is newer.
        await db["agents"].update_one({"_id": "pia"}, {"$unset": {"presence_changed_ms": ""}})
        old = status_changed("pia", "away", put_at - timedelta(days=1))
        await uow.run(lambda tx: routing.agents.on_agent_status_changed(tx, old))
        assert (await routing.views.get_agent("pia")).status is Presence.AWAY and counted(stale) == 2
    finally:
        await client.close()


async def test_a_declined_ticket_is_offered_again_to_the_only_qualifying_agent_once_the_cooldown_ends(mongo_url):
    url, lock_dir = mongo_url
    config = RoutingConfig(mode=Mode.OFFER, offer_timeout=timedelta(seconds=60), decline_cooldown=timedelta(seconds=1))
    routing, uow, client = await routing_on(url, lock_dir, "routing_decline_cooldown", config)
    try:
        await routing.agents.put_agent("only", available("O"))
        event = created("T-declined", "chat", "normal", 1)
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, event))
        await routing.dispatcher.drain(ticket_ids={"T-declined"}, sweep=False)
        [first] = await routing.views.offers_for("only")
        await routing.offers.answer_offer(first["offer_id"], accept=False)

        view = await routing.views.ticket_view("T-declined")
        assert (view["state"], view["declined_by"], list(view["declined_until"])) == ("waiting", ["only"], ["only"])
        assert await routing.dispatcher.drain() == 0, "not offered again to the agent who just declined"
        assert await routing.offers.revisit_declined() == 0

        await asyncio.sleep(1.1)
        assert await routing.offers.revisit_declined() == 1, "the sweep looks at it again wherever it is in the queue"
        assert await routing.dispatcher.drain(ticket_ids={"T-declined"}, sweep=False) == 1
        [again] = await routing.views.offers_for("only")
        view = await routing.views.ticket_view("T-declined")
        assert again["offer_id"] != first["offer_id"] and "declined it before" in view["reason"]
        assert view["declined_until"] == {} and await routing.offers.revisit_declined() == 0
    finally:
        await client.close()


async def test_a_batch_costs_a_few_round_trips_whatever_its_size_and_later_events_see_earlier_ones(mongo_url):
    url, lock_dir = mongo_url
    count, metrics = CommandNames(), RoutingMetrics(CollectorRegistry())
    routing, uow, client = await routing_on(url, lock_dir, "routing_round_trips", metrics=metrics, listeners=[count])
    try:
        for number in range(3):
            await routing.agents.put_agent(f"a{number}", AgentProfile(name="A", skills={"chat": 1}, capacity=10,
                                                                status="available"))
        batch = [created(f"T{number:02d}", "chat", "normal", 60 - number) for number in range(20)]
        repeat = new_event(
            TicketCreated(ticket_id="T-repeat", channel="chat", customer=Customer(id="c-T00"), subject="s",
                          priority="low", required_skills=["chat"], created_at=utc_now()),
            source="tests", subject="T-repeat",
        )
        raised = new_event(TicketPriorityChanged(ticket_id="T00", previous_priority="normal", priority="urgent",
                                                 changed_at=utc_now()),
                           source="tests", subject="T00")
        events = [*batch, repeat, raised]

        async def consume(tx):  # the consumer's batch: prefetch, then each handler
            await routing.tickets.prefetch(tx, events)
            for event in events:
                handler = routing.tickets.on_priority_changed if event is raised else routing.tickets.on_ticket_created
                await handler(tx, event)

        count.names.clear()
        await uow.run(consume)
        consumed = len(count.names)
        count.names.clear()
        assert await routing.dispatcher.drain(ticket_ids={event.subject for event in events}, sweep=False) == 21
        drained = len(count.names)

        assert consumed <= 10 and drained <= 14, (count.names, consumed, drained)
        view = await routing.views.ticket_view("T00")
        assert (view["state"], view["priority"]) == ("assigned", "urgent"), "the change in the same batch applied"
        assert sum([(await routing.views.get_agent(f"a{n}")).load for n in range(3)]) == 21
        repeat_view = await routing.views.ticket_view("T-repeat")
        assert repeat_view["assignee_id"] == view["assignee_id"], "affinity to the agent given T00 in the same drain"
        assert (await routing.views.queue_summary()).depth == 0
        await routing.views.refresh_gauges()
        assert metrics.queue_depth.labels(priority="normal")._value.get() == 0
    finally:
        await client.close()


async def test_a_claim_on_what_another_replica_changed_meanwhile_fails_the_whole_transaction(mongo_url):
    url, lock_dir = mongo_url
    routing, uow, client = await routing_on(url, lock_dir, "routing_stale_claim")
    db = client["routing_stale_claim"]
    try:
        await routing.agents.put_agent("solo", available("S"))
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, created("T-first", "chat", "normal", 2)))
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, created("T-second", "chat", "normal", 1)))

        async def stale_claims(tx):
            solo = await tx.agents.get("solo")
            first = await tx.tickets.get("T-first")
            # What a replica that read before this one's commit would do: claim the slot it saw free.
            await db["agents"].update_one({"_id": "solo"}, {"$inc": {"load": 1, "free": -1, "version": 1}},
                                          session=tx.session)
            tx.agents.claim_slot(solo, "chat")
            tx.tickets.claim(first.assign("solo", "the slot it saw free", utc_now()))

        with pytest.raises(BulkWriteError):
            await uow.run(stale_claims)

        assert (await routing.views.get_agent("solo")).load == 0, "nothing of the failed transaction stays"
        assert (await routing.views.ticket_view("T-first"))["state"] == "waiting"
        assert await routing.dispatcher.drain(ticket_ids={"T-first", "T-second"}, sweep=False) == 1
        assert ((await routing.views.get_agent("solo")).load,
                (await routing.views.ticket_view("T-first"))["assignee_id"]) == (1, "solo")
    finally:
        await client.close()


async def migrate_command(url: str, lock_dir: Path, database: str) -> str:
    """`python -m services.routing migrate`, as an operator runs it; what it prints."""
    environment = {**os.environ, "MONGODB_URL": url, "MONGODB_DATABASE": database,
                   "MONGODB_TRANSACTION_LOCK_DIR": str(lock_dir)}
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.routing", "migrate", env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await command.communicate()
    assert command.returncode == 0, err.decode()
    return out.decode().strip()


async def test_the_migrate_command_upgrades_what_an_earlier_release_stored_once_and_routing_serves_it(mongo_url):
    url, lock_dir = mongo_url
    database = "routing_skeleton"
    routing, uow, client = await routing_on(url, lock_dir, database)
    db = client[database]
    try:
        # As the walking skeleton stored them: no skill index, no per-channel load, no urgency, no channel.
        await db["agents"].insert_one({"_id": "old-agent", "name": "Old", "skills": {"chat": 1}, "capacity": 2,
                                       "status": "available", "load": 1, "version": 1})
        await db["tickets"].insert_one({"_id": "T-skeleton", "state": "waiting", "priority": "high",
                                        "required_skills": ["chat"], "created_ms": now_ms() - 60_000,
                                        "assignee_id": None})
        # As a later release stored declines: who, without when.
        await uow.run(lambda tx: routing.tickets.on_ticket_created(tx, created("T-declined", "none", "low", 1)))
        await db["tickets"].update_one({"_id": "T-declined"}, {"$set": {"declined_by": ["someone"]},
                                                                "$unset": {"declines": ""}})

        assert await migrate_command(url, lock_dir, database) == (
            "routing: upgraded 3 agents and tickets stored by an earlier release")
        assert await migrate_command(url, lock_dir, database) == (
            "routing: upgraded 0 agents and tickets stored by an earlier release"), "once only"

        assert await routing.dispatcher.drain(ticket_ids={"T-skeleton"}, sweep=False) == 1
        agent = await routing.views.get_agent("old-agent")
        assert (agent.load, agent.load_by_channel["web"]) == (2, 2)
        assert (await routing.views.ticket_view("T-skeleton"))["assignee_id"] == "old-agent"
        declined = await routing.views.ticket_view("T-declined")
        assert declined["declined_by"] == ["someone"] and list(declined["declined_until"]) == ["someone"]
    finally:
        await client.close()

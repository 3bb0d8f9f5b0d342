"""SLA's consumer against the real Mongo-wire server: a batch of events costs a few round trips whatever its
size, and a batch that lost a race with another writer is applied again event by event, exactly once."""

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.sla.domain import SlaRules
from services.sla.metrics import SlaMetrics
from services.sla.policy import load_policies
from services.sla.repository import SlaTransaction
from services.sla.service import Sla
from shared import topics
from shared.clock import utc_now
from shared.consumer import EventConsumer, Subscription
from shared.envelope import new_event
from shared.events import Channel, Customer, Priority, TicketCreated, TicketMessageAdded
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox

from tests.support import CommandNames, DeadLetterSink, consumer_records, event_consumer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def sla_store(tmp_path_factory):
    data = tmp_path_factory.mktemp("sla-batches")
    commands = CommandNames()
    with mongo_wire_server(data) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[commands])
        db = client["switchboard_sla"]
        try:
            uow = UnitOfWork(
                client, db, Outbox(db).write, transaction_lock=data / "switchboard_sla.lock", transaction_type=SlaTransaction
            )
            sla = Sla(uow, "switchboard/sla", SlaRules(load_policies()), SlaMetrics(CollectorRegistry()))
            yield sla, uow, db, commands
        finally:
            await client.close()


def consumer(sla: Sla, uow: UnitOfWork, sink: DeadLetterSink, prefetch=None) -> EventConsumer:
    subscriptions = [Subscription(topics.TICKETS, sla.handlers())]
    return event_consumer(subscriptions, group="switchboard-sla", uow=uow, dead_letters=sink, prefetch=prefetch or sla.prefetch)


def records(*payloads) -> list[ConsumerRecord]:
    events = [new_event(payload, source="tests", subject=payload.ticket_id) for payload in payloads]
    return consumer_records(lambda event: topics.TICKETS, events)


def created(ticket_id: str) -> TicketCreated:
    return TicketCreated(
        ticket_id=ticket_id, channel=Channel.API, customer=Customer(id="sla-batch"), subject="batch",
        priority=Priority.NORMAL, required_skills=[], created_at=utc_now(),
    )


def agent_reply(ticket_id: str) -> TicketMessageAdded:
    return TicketMessageAdded(ticket_id=ticket_id, message_id=f"m-{ticket_id}", author_type="agent", public=True,
                              body="On it", added_at=utc_now() + timedelta(seconds=1))


def new_tickets(count: int) -> list[str]:
    return [f"TKT-B-{uuid.uuid4().hex[:10]}" for _ in range(count)]


async def events_about(db, tickets: list[str]) -> Counter:
    rows = await db["outbox"].find({"key": {"$in": tickets}}).to_list()
    return Counter(row["type"].removeprefix("support.sla.").removesuffix(".v1") for row in rows)


async def live_clocks_are_counted_exactly(db) -> bool:
    counted = (await db["stats"].find_one({"_id": "live_clocks"}))["n"]
    return counted == await db["clocks"].count_documents({"stopped": False})


async def test_a_batch_costs_the_same_few_commands_whether_it_carries_ten_tickets_or_a_hundred(sla_store):
    sla, uow, db, commands = sla_store
    sink = DeadLetterSink()
    costs = {}
    for size in (10, 100):
        tickets = new_tickets(size)
        commands.names.clear()
        batch = records(*(payload for ticket in tickets for payload in (created(ticket), agent_reply(ticket))))
        await consumer(sla, uow, sink).consume(batch)
        costs[size] = Counter(commands.names)

        assert (await events_about(db, tickets))["fulfilled"] == size, "every first reply fulfilled its clock"
        first_replies = await db["clocks"].find({"_id": {"$in": [f"{t}:first_reply" for t in tickets]}}).to_list()
        assert {(clock["stopped"], clock["version"]) for clock in first_replies} == {(True, 2)}

    assert costs[10] == costs[100]
    assert sum(costs[100].values()) <= 10
    assert sink.dead_letters == []
    assert await live_clocks_are_counted_exactly(db)


async def test_a_batch_that_read_a_clock_since_changed_is_applied_again_event_by_event_exactly_once(sla_store):
    sla, uow, db, _ = sla_store
    sink = DeadLetterSink()
    raced, calm = new_tickets(2)
    await consumer(sla, uow, sink).consume(records(created(raced), created(calm)))

    races = []

    async def prefetch_then_lose_a_race(tx, events):
        """As if a timer fired the clock right after the batch read it (once: the retries find it as stored)."""
        await sla.prefetch(tx, events)
        if not races:
            races.append(raced)
            await db["clocks"].update_one({"_id": f"{raced}:first_reply"}, {"$inc": {"version": 1}}, session=tx.session)

    await consumer(sla, uow, sink, prefetch_then_lose_a_race).consume(records(agent_reply(raced), agent_reply(calm)))

    assert races == [raced]
    for ticket in (raced, calm):
        assert (await events_about(db, [ticket]))["fulfilled"] == 1
        first_reply = await db["clocks"].find_one({"_id": f"{ticket}:first_reply"})
        assert first_reply["stopped"] is True and first_reply["version"] == 2, "the race's transaction left nothing"
    assert sink.dead_letters == []
    assert await live_clocks_are_counted_exactly(db)

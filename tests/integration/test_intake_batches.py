"""Intake's consumer against the real Mongo-wire server: a batch of events costs a few round trips whatever its
size, what one event of a batch wrote is what the next one reads, and a batch that lost a race with another
writer is applied again event by event, exactly once."""

import asyncio
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import ConsumerRecord
from pymongo import AsyncMongoClient

from services.intake import domain
from services.intake.domain import new_ticket_id
from services.intake.repository import IntakeTransaction
from services.intake.service import Intake
from shared import topics
from shared.clock import utc_now
from shared.consumer import EventConsumer, Subscription
from shared.envelope import new_event
from shared.events import Channel, Customer, Priority, SlaClockStarted, TicketAssigned, TicketSubmit, TicketUnassigned
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox

from tests.support import CommandNames, DeadLetterSink, consumer_records, event_consumer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def intake_store(tmp_path_factory):
    data = tmp_path_factory.mktemp("intake-batches")
    commands = CommandNames()
    with mongo_wire_server(data) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[commands])
        db = client["switchboard_intake"]
        try:
            uow = UnitOfWork(
                client,
                db,
                Outbox(db).write,
                transaction_lock=data / "switchboard_intake.lock",
                transaction_type=IntakeTransaction,
            )
            yield Intake(uow, "switchboard/intake"), uow, db, commands
        finally:
            await client.close()


def consumer(intake: Intake, uow: UnitOfWork, sink: DeadLetterSink, prefetch=None) -> EventConsumer:
    subscriptions = [
        Subscription(topics.INBOUND, {TicketSubmit: intake.on_submit_command}),
        Subscription(topics.ROUTING, {TicketAssigned: intake.on_assigned, TicketUnassigned: intake.on_unassigned}),
        Subscription(topics.SLA, {SlaClockStarted: intake.on_sla_event}),
    ]
    return event_consumer(
        subscriptions, group="switchboard-intake", uow=uow, dead_letters=sink, prefetch=prefetch or intake.prefetch
    )


TOPIC_OF = {TicketSubmit: topics.INBOUND, TicketAssigned: topics.ROUTING, SlaClockStarted: topics.SLA}


def records(*payloads) -> list[ConsumerRecord]:
    events = [new_event(payload, source="tests", subject=str(uuid.uuid4())) for payload in payloads]
    return consumer_records(lambda event: TOPIC_OF[type(event.data)], events)


def submit(customer_id: str) -> TicketSubmit:
    return TicketSubmit(channel=Channel.API, customer=Customer(id=customer_id, name="Dee"), subject="Help", body="Please")


def assigned(ticket_id: str, agent_id: str = "agent-1") -> TicketAssigned:
    return TicketAssigned(ticket_id=ticket_id, agent_id=agent_id, reason="best match", assigned_at=utc_now())


def clock_started(ticket_id: str, metric: str) -> SlaClockStarted:
    now = utc_now()
    return SlaClockStarted(ticket_id=ticket_id, metric=metric, target_seconds=3600, started_at=now,
                           due_at=now + timedelta(hours=1))


def new_customers(count: int) -> list[str]:
    return [f"cust-b-{uuid.uuid4().hex[:10]}" for _ in range(count)]


async def tickets_of(db, customers: list[str]) -> list[dict]:
    return await db["tickets"].find({"customer.id": {"$in": customers}}).to_list()


async def test_concurrent_api_submissions_read_their_customers_in_one_query_per_group(intake_store):
    """The HTTP path's group commit: 40 requests at once share a few transactions, and each group reads its
    customers together instead of one round trip per request while it holds the lock."""
    intake, _, db, commands = intake_store
    customers = new_customers(40)
    commands.names.clear()

    submitted = await asyncio.gather(*(intake.submit(submit(customer)) for customer in customers))

    assert sorted(answer.ticket.customer.id for answer in submitted) == sorted(customers)
    assert len(await tickets_of(db, customers)) == 40
    sent = Counter(commands.names)
    print(sent)
    assert sent["commitTransaction"] <= 3 and sent["find"] <= 2 * sent["commitTransaction"], sent


async def test_a_batch_costs_the_same_few_commands_whether_it_carries_ten_tickets_or_fifty(intake_store):
    intake, uow, db, commands = intake_store
    sink = DeadLetterSink()
    costs = {}
    for size in (10, 50):
        customers = new_customers(size)
        commands.names.clear()
        await consumer(intake, uow, sink).consume(records(*(submit(customer) for customer in customers)))
        submitted = Counter(commands.names)

        tickets = [ticket["_id"] for ticket in await tickets_of(db, customers)]
        commands.names.clear()
        followed_up = (
            payload
            for ticket in tickets
            for payload in (clock_started(ticket, "first_reply"), assigned(ticket), clock_started(ticket, "resolution"))
        )
        await consumer(intake, uow, sink).consume(records(*followed_up))
        costs[size] = (submitted, Counter(commands.names))

        assert len(tickets) == size
        for ticket in await tickets_of(db, customers):
            assert (ticket["assignee_id"], ticket["version"]) == ("agent-1", 2)
            assert {metric: clock["state"] for metric, clock in ticket["sla"].items()} == {
                "first_reply": "running", "resolution": "running"
            }
        profiles = await db["customers"].find({"_id": {"$in": customers}}).to_list()
        assert {(profile["name"], profile["last_agent_id"]) for profile in profiles} == {("Dee", "agent-1")}

    print(costs)
    assert costs[10] == costs[50]
    assert sum(costs[50][0].values()) <= 10 and sum(costs[50][1].values()) <= 10
    assert sink.dead_letters == []


async def test_what_an_event_wrote_is_what_the_next_one_in_its_batch_reads(intake_store):
    intake, uow, db, _ = intake_store
    sink = DeadLetterSink()
    customer, other = new_customers(2)
    await consumer(intake, uow, sink).consume(records(submit(customer), submit(other)))
    first, others = [(await tickets_of(db, [someone]))[0]["_id"] for someone in (customer, other)]

    await consumer(intake, uow, sink).consume(
        records(clock_started(first, "first_reply"), assigned(first, "agent-7"), submit(customer), assigned(others))
    )

    tickets = await db["tickets"].find({"customer.id": customer}).sort("created_ms").to_list()
    assert len(tickets) == 2 and tickets[0]["_id"] == first
    assert tickets[0]["assignee_id"] == "agent-7" and tickets[0]["sla"]["first_reply"]["state"] == "running"
    assert tickets[1]["previous_agent_id"] == "agent-7", "the customer's next ticket knows the agent just assigned"
    assert (await db["tickets"].find_one({"_id": others}))["assignee_id"] == "agent-1"
    assert sink.dead_letters == []


async def test_a_batch_that_read_a_ticket_since_changed_is_applied_again_event_by_event_exactly_once(intake_store):
    intake, uow, db, _ = intake_store
    sink = DeadLetterSink()
    customers = new_customers(2)
    await consumer(intake, uow, sink).consume(records(*(submit(customer) for customer in customers)))
    raced, calm = [(await tickets_of(db, [customer]))[0]["_id"] for customer in customers]

    races = []

    async def prefetch_then_lose_a_race(tx, events):
        """As if an agent edited the ticket right after the batch read it (once: the retries find it as stored)."""
        await intake.prefetch(tx, events)
        if not races:
            races.append(raced)
            await db["tickets"].update_one({"_id": raced}, {"$inc": {"version": 1}}, session=tx.session)

    batch = records(assigned(raced), clock_started(raced, "first_reply"), assigned(calm))
    await consumer(intake, uow, sink, prefetch_then_lose_a_race).consume(batch)

    assert races == [raced]
    stored = {ticket["_id"]: ticket for ticket in await tickets_of(db, customers)}
    assert (stored[raced]["assignee_id"], stored[raced]["version"]) == ("agent-1", 2), "the race left nothing"
    assert stored[raced]["sla"]["first_reply"]["state"] == "running"
    assert (stored[calm]["assignee_id"], stored[calm]["version"]) == ("agent-1", 2)
    assert sink.dead_letters == []


async def test_requests_sharing_a_transaction_see_what_the_earlier_ones_queued(intake_store):
    intake, uow, db, _ = intake_store
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    by_email = TicketSubmit(channel=Channel.EMAIL, customer=Customer(email=email), subject="Hello", body="Again")

    first, second = await asyncio.gather(intake.submit(by_email), intake.submit(by_email))

    assert first.ticket.customer.id == second.ticket.customer.id, "one profile per email, even within one transaction"
    assert await db["customers"].count_documents({"email": email}) == 1


async def test_a_ticket_opened_in_a_transaction_can_be_edited_in_it(intake_store):
    _, uow, db, _ = intake_store
    now = utc_now()
    ticket = domain.open_ticket(submit("cust-editing"), ticket_id=new_ticket_id(now), now=now)
    edited = domain.edit(ticket, now, priority=Priority.URGENT).ticket

    async def open_then_edit(tx) -> bool:
        await tx.tickets.add(ticket)
        return await tx.tickets.replace(edited, expected_version=ticket.version)

    assert await uow.run(open_then_edit)
    stored = await db["tickets"].find_one({"_id": ticket.id})
    assert (stored["priority"], stored["version"]) == ("urgent", ticket.version + 1)


def submitted_by(source: str, event_id: str, customer_id: str) -> ConsumerRecord:
    event = new_event(submit(customer_id), source=source, subject=customer_id).model_copy(update={"id": event_id})
    return consumer_records(lambda _: topics.INBOUND, [event])[0]


async def test_an_event_is_the_same_event_by_its_source_and_id(intake_store):
    intake, uow, db, _ = intake_store
    sink = DeadLetterSink()
    customer = new_customers(1)[0]

    await consumer(intake, uow, sink).consume([submitted_by("crm/acme", "42", customer), submitted_by("shop", "42", customer)])
    await consumer(intake, uow, sink).consume([submitted_by("crm/acme", "42", customer)])

    assert len(await tickets_of(db, [customer])) == 2, "one ticket per source; the redelivery opened none"
    assert sink.dead_letters == []


async def test_an_event_processed_before_the_inbox_knew_sources_is_still_a_duplicate(intake_store):
    """An upgrade keeps the inbox: records keyed `<group>:<id>` count as seen until they expire."""
    intake, uow, db, _ = intake_store
    customer = new_customers(1)[0]
    event_id = str(uuid.uuid4())
    await db["inbox"].insert_one({"_id": f"switchboard-intake:{event_id}", "expires_ms": 2**62})

    await consumer(intake, uow, DeadLetterSink()).consume([submitted_by("crm/acme", event_id, customer)])

    assert await tickets_of(db, [customer]) == []

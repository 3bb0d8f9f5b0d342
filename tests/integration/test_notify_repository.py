"""Notify's MongoDB adapters against the real Mongo-wire server: a batch's reads see its own queued writes,
replicas claiming due deliveries at once never share one, a restarted replica takes back its own, and a
customer's once-per-customer period is taken by one delivery only."""

import asyncio
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from services.notify.domain import Delivery, DeliveryChannel, DeliveryState, message_id_for, sent
from services.notify.repository import NotifyTransaction
from shared.clock import to_ms, utc_now
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox
from tests.support import CommandNames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def database(tmp_path_factory):
    data = tmp_path_factory.mktemp("notify-repository")
    with mongo_wire_server(data) as url:
        client = AsyncMongoClient(url, tz_aware=True)
        try:
            yield client, data, url
        finally:
            await client.close()


def unit_of_work(database, name: str, client: AsyncMongoClient | None = None) -> UnitOfWork:
    """On the shared client, or on `client` (one with a command listener)."""
    shared_client, data, _ = database
    client = client or shared_client
    db = client[name]
    return UnitOfWork(client, db, Outbox(db).write, transaction_lock=data / f"{name}.lock", transaction_type=NotifyTransaction)


def delivery(key: str, *, ticket_id: str = "TKT-1", awaiting: str | None = None, due_in: float = 0) -> Delivery:
    now = utc_now()
    return Delivery(
        id=key, ticket_id=ticket_id, kind="acknowledgement", channel=DeliveryChannel.EMAIL,
        recipient="ann@example.com", locale="en", subject="s", text="t", html="h",
        message_id=message_id_for(key), correlation_id="c", causation_id=key.split(":")[0],
        next_attempt_at=now + timedelta(seconds=due_in), created_at=now, awaiting=awaiting,
    )


async def test_a_batch_reads_what_it_queued_and_adds_a_stored_delivery_only_once(database):
    uow = unit_of_work(database, "owed")
    await uow.run(lambda tx: tx.owed.add_if_absent(delivery("e0:customer:acknowledgement")))

    async def batch(tx):
        deliveries, tickets = tx.owed, tx.tickets
        await deliveries.load(["e0:customer:acknowledgement", "e1:customer:acknowledgement"])
        await tickets.update("TKT-1", {"subject": "Printer on fire"})
        added = [
            await deliveries.add_if_absent(delivery("e0:customer:acknowledgement")),
            await deliveries.add_if_absent(delivery("e1:customer:acknowledgement", awaiting="sla:first_reply")),
            await deliveries.add_if_absent(delivery("e1:customer:acknowledgement")),
        ]
        held = await deliveries.held(["e0:customer:acknowledgement", "e1:customer:acknowledgement"])
        recent = await deliveries.count_recent("ann@example.com", to_ms(utc_now() - timedelta(hours=1)))
        cancelled = await deliveries.suppress(delivery("e0:customer:acknowledgement"), "cancelled by a test")
        pending = await deliveries.pending_of_kinds("TKT-1", ["acknowledgement"])
        return added, [d.id for d in held], recent, cancelled, [d.id for d in pending], await tickets.get("TKT-1")

    added, held, recent, cancelled, pending, ticket = await uow.run(batch)

    assert added == [False, True, False]
    assert held == ["e1:customer:acknowledgement"], "a delivery queued in this batch is already visible to it"
    assert recent == 2
    assert cancelled
    assert pending == ["e1:customer:acknowledgement"]
    assert ticket is not None and ticket.subject == "Printer on fire"
    stored = {d["_id"]: d["state"] async for d in uow.db["deliveries"].find({})}
    assert stored == {"e0:customer:acknowledgement": "suppressed", "e1:customer:acknowledgement": "pending"}
    assert (await uow.db["tickets"].find_one({"_id": "TKT-1"}))["subject"] == "Printer on fire"


async def test_replicas_claiming_at_once_share_no_delivery_and_leave_none_behind(database):
    replicas = [unit_of_work(database, "claims") for _ in range(3)]
    await replicas[0].run(
        lambda tx: _add_all(tx, [delivery(f"e{n}:customer:acknowledgement", due_in=-n) for n in range(45)])
    )
    await replicas[0].run(lambda tx: _add_all(tx, [delivery("later:customer:acknowledgement", due_in=60)]))

    async def claim(uow: UnitOfWork, replica: str) -> list[Delivery]:
        return await uow.run(lambda tx: claim_due(tx, replica, 20))

    rounds = [await asyncio.gather(*(claim(uow, f"notify-{n}") for n, uow in enumerate(replicas))) for _ in range(2)]

    claimed = [d for batches in rounds for batch in batches for d in batch]
    assert sorted(d.id for d in claimed) == sorted(f"e{n}:customer:acknowledgement" for n in range(45))
    assert all(d.attempts == 1 and d.state is DeliveryState.PENDING for d in claimed)
    most_overdue = [f"e{n}:customer:acknowledgement" for n in range(44, 24, -1)]
    assert most_overdue in [[d.id for d in batch] for batch in rounds[0]], "the first claim takes the most overdue"


async def test_a_restarted_replica_takes_back_what_it_held_and_nothing_another_holds(database):
    uow = unit_of_work(database, "restarts")
    await uow.run(lambda tx: _add_all(tx, [delivery(f"e{n}:customer:acknowledgement", due_in=-n) for n in range(6)]))
    died_holding = {d.id for d in await uow.run(lambda tx: claim_due(tx, "notify-a:8004", 4))}
    still_held = {d.id for d in await uow.run(lambda tx: claim_due(tx, "notify-b:8004", 4))}
    assert len(died_holding) == 4 and len(still_held) == 2
    assert await uow.run(lambda tx: claim_due(tx, "notify-a:8004", 10)) == [], "every delivery is held for a minute"

    released = await uow.run(lambda tx: tx.deliveries.release_claims_of("notify-a:8004"))
    taken_back = await uow.run(lambda tx: claim_due(tx, "notify-a:8004", 10))

    assert released == 4
    assert {d.id for d in taken_back} == died_holding
    assert all(d.attempts == 2 for d in taken_back), "the send its previous process may have made counts"


async def test_a_customers_period_goes_to_one_delivery_even_when_a_replica_read_it_free_before_another_took_it(database):
    uow = unit_of_work(database, "periods")

    async def take(key: str, delivery_id: str, due_ms: int) -> bool:
        return await uow.run(lambda tx: tx.customer_limits.take(key, delivery_id, due_ms=due_ms, until_ms=due_ms + 90_000))

    async def stored(key: str) -> dict:
        return await uow.reads.db["customer_limits"].find_one({"_id": key}, {"_id": 0, "taken_ms": 0})

    assert await take("nps_survey:ann", "d1", 1_000)
    assert not await take("nps_survey:ann", "d2", 50_000), "due within d1's period"
    assert await take("nps_survey:ann", "d1", 60_000), "d1 planned again keeps its period"
    assert await stored("nps_survey:ann") == {"delivery_id": "d1", "until_ms": 91_000}
    assert await take("nps_survey:ann", "d3", 91_000), "due as d1's period ends"

    await uow.run(lambda tx: tx.customer_limits.release("nps_survey:ann", "d1"))
    assert await stored("nps_survey:ann") == {"delivery_id": "d3", "until_ms": 181_000}, "only its holder releases it"
    await uow.run(lambda tx: tx.customer_limits.release("nps_survey:ann", "d3"))
    assert await take("nps_survey:ann", "d4", 100_000), "a cancelled survey's period is free again"

    assert await take("nps_survey:bo", "theirs", 1_000)

    async def read_free_before_theirs_committed(tx) -> bool:
        tx.cache["customer_limits"] = {"nps_survey:bo": None}  # what this replica's prefetch read
        return await tx.customer_limits.take("nps_survey:bo", "mine", due_ms=2_000, until_ms=92_000)

    with pytest.raises(BulkWriteError) as collided:
        await uow.run(read_free_before_theirs_committed)
    assert collided.value.details["writeErrors"][0]["code"] == 11000  # the batch fails, and is retried...
    assert not await take("nps_survey:bo", "mine", 2_000), "...seeing the period taken"
    assert await stored("nps_survey:bo") == {"delivery_id": "theirs", "until_ms": 91_000}


async def test_sends_recorded_together_keep_each_record_conditional_on_its_claim(database):
    commands = CommandNames()
    counted = AsyncMongoClient(database[2], tz_aware=True, event_listeners=[commands])
    uow = unit_of_work(database, "records", counted)
    await uow.run(lambda tx: _add_all(tx, [delivery(f"r{n}:customer:acknowledgement") for n in range(3)]))
    sent_now, taken_over, failed_later = await uow.run(lambda tx: claim_due(tx, "replica-a", 3))
    await uow.run(lambda tx: another_replica_claims(tx, taken_over.id))  # its claim expired first

    async def record_together(tx) -> list[bool]:
        await tx.owed.load([sent_now.id, taken_over.id, failed_later.id])
        return [
            await tx.owed.mark_sent(sent(sent_now, utc_now())),
            await tx.owed.record_failure(taken_over.model_copy(update={"state": DeliveryState.PENDING, "last_error": "x"})),
            await tx.owed.record_failure(failed_later.model_copy(update={"last_error": "SMTP 451: try later"})),
        ]

    before = len(commands.on)
    try:
        recorded = await uow.run(record_together)
    finally:
        await counted.close()

    assert recorded == [True, False, True], "the one another replica claimed since is left to that replica"
    stored = {d["_id"]: (d["state"], d.get("last_error")) async for d in database[0]["records"]["deliveries"].find({})}
    assert stored[sent_now.id] == ("sent", None)
    assert stored[taken_over.id] == ("pending", None)
    assert stored[failed_later.id] == ("pending", "SMTP 451: try later")
    assert [name for name, collection in commands.on[before:] if collection == "deliveries"] == ["find", "update"]


async def another_replica_claims(tx, delivery_id: str) -> None:
    await tx.db["deliveries"].update_one({"_id": delivery_id}, {"$inc": {"attempts": 1}}, session=tx.session)


async def claim_due(tx, replica: str, limit: int) -> list[Delivery]:
    now = to_ms(utc_now())
    return await tx.deliveries.claim_due(now, now + 60_000, limit, replica=replica)


async def _add_all(tx, deliveries: list[Delivery]) -> None:
    for each in deliveries:
        await tx.owed.add_if_absent(each)

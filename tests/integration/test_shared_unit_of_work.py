"""The unit of work against the real Mongo-wire server: state, outbox and after-commit effects together."""

import asyncio

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import BulkWriteError

from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import TicketClosed
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox
from tests.support import CommandNames

pytestmark = pytest.mark.integration


class Refused(Exception):
    pass


@pytest.fixture(scope="module")
async def unit_of_work(tmp_path_factory):
    data = tmp_path_factory.mktemp("unit-of-work")
    with mongo_wire_server(data) as url:
        client = AsyncMongoClient(url, tz_aware=True)
        db = client["unit_of_work"]
        try:
            yield UnitOfWork(client, db, Outbox(db).write, transaction_lock=data / "unit_of_work.lock"), db
        finally:
            await client.close()


def closed(ticket_id: str):
    return new_event(TicketClosed(ticket_id=ticket_id, closed_at=utc_now()), source="tests", subject=ticket_id)


async def test_effects_run_after_a_commit_and_never_after_an_abort(unit_of_work):
    uow, db = unit_of_work
    counted: list[str] = []

    async def close(ticket_id: str, *, fail: bool):
        async def work(tx):
            await db["tickets"].insert_one({"_id": ticket_id, "status": "closed"}, session=tx.session)
            tx.publish(topics.TICKETS, closed(ticket_id))
            tx.on_commit(lambda: counted.append(ticket_id))
            if fail:
                raise Refused(ticket_id)

        await uow.run(work)

    await close("T-kept", fail=False)
    with pytest.raises(Refused):
        await close("T-aborted", fail=True)

    assert counted == ["T-kept"]
    assert [d["_id"] async for d in db["tickets"].find({})] == ["T-kept"]
    subjects = [d["key"] async for d in db["outbox"].find({})]
    assert subjects == ["T-kept"], "an aborted transaction leaves no event behind either"


async def test_queued_writes_commit_with_the_work_in_queue_order_or_not_at_all(unit_of_work):
    from pymongo import InsertOne, UpdateOne

    uow, db = unit_of_work

    async def count(tx, counter: str, *, fail: bool):
        tx.write_later("counters", UpdateOne({"_id": counter}, {"$inc": {"n": 1}}, upsert=True))
        tx.write_later("rows", InsertOne({"_id": counter}))
        tx.write_later("counters", UpdateOne({"_id": counter}, {"$inc": {"n": 1}}))
        assert await db["counters"].find_one({"_id": counter}, session=tx.session) is None, "queued, not sent yet"
        await tx.flush()
        assert (await db["counters"].find_one({"_id": counter}, session=tx.session))["n"] == 2
        tx.write_later("counters", UpdateOne({"_id": counter}, {"$inc": {"n": 10}}))
        if fail:
            raise Refused(counter)

    await uow.run(lambda tx: count(tx, "kept", fail=False))
    with pytest.raises(Refused):
        await uow.run(lambda tx: count(tx, "aborted", fail=True))

    assert await db["counters"].find({}).sort("_id").to_list() == [{"_id": "kept", "n": 12}]
    assert await db["rows"].find({}).to_list() == [{"_id": "kept"}], "an aborted transaction's queued writes vanish"


async def test_a_committed_read_waits_for_the_transaction_in_flight_and_never_sees_what_it_rolled_back(unit_of_work):
    uow, db = unit_of_work
    inside, release = asyncio.Event(), asyncio.Event()

    async def draft_then_fail(tx) -> None:
        await db["drafts"].insert_one({"_id": "D-1"}, session=tx.session)
        inside.set()
        await release.wait()
        raise Refused("rolled back")

    running = asyncio.create_task(uow.run(draft_then_fail))
    await inside.wait()
    assert await db["drafts"].find({}).to_list() == [{"_id": "D-1"}], "an ordinary read sees the transaction in flight"
    committed = asyncio.create_task(uow.read_committed(lambda: db["drafts"].find({}).to_list()))
    await asyncio.wait({committed}, timeout=2)  # ample time for a read that did not wait to come back
    release.set()
    with pytest.raises(Refused):
        await running

    assert await committed == []


class DocumentsSent(monitoring.CommandListener):
    """How many documents each collection's commands of one kind carried (`update`'s statements: the writes
    the server made; `insert`'s documents)."""

    def __init__(self, command: str = "update", documents: str = "updates") -> None:
        self._command, self._documents = command, documents
        self.by_collection: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == self._command:
            collection = event.command[self._command]
            self.by_collection[collection] = self.by_collection.get(collection, 0) + len(event.command[self._documents])

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


async def test_queued_writes_of_one_document_fold_into_one_with_the_same_result(tmp_path):
    from pymongo import UpdateOne

    statements = DocumentsSent()
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[statements])
        db = client["folded"]
        uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=tmp_path / "folded.lock")

        async def work(tx) -> None:
            await db["views"].insert_one({"_id": "T-4", "n": 0}, session=tx.session)
            tx.update_later("views", "T-1", {"$set": {"assignee": "ada", "seen": 1}, "$setOnInsert": {"created": 1}},
                            upsert=True)
            tx.update_later("views", "T-1", {"$set": {"seen": 2}, "$setOnInsert": {"created": 2}}, upsert=True)
            tx.update_later("views", "T-2", {"$inc": {"n": 1}}, upsert=True)
            tx.update_later("views", "T-2", {"$inc": {"n": 2}}, upsert=True)
            tx.update_later("views", "T-3", {"$set": {"a": {"b": 1}}}, upsert=True)
            tx.update_later("views", "T-3", {"$set": {"a.c": 2}}, upsert=True)  # one path inside the other: two writes
            tx.write_later("views", UpdateOne({"_id": "T-2"}, {"$set": {"n": 100}}))
            tx.update_later("views", "T-2", {"$inc": {"n": 10}}, upsert=True)  # after a plain write: stays after it
            tx.update_later("views", "T-4", {"$inc": {"n": 1}}, upsert=False)
            tx.update_later("views", "T-4", {"$set": {"seen": 1}}, upsert=False)
            tx.update_later("views", "T-5", {"$set": {"lost": True}}, upsert=False)  # no such document: no effect
            tx.update_later("views", "T-5", {"$set": {"kept": True}}, upsert=True)  # so not folded into the one before
            tx.replace_later("facts", {"_id": "T-1", "version": 1})
            tx.replace_later("facts", {"_id": "T-1", "version": 2})

        try:
            await uow.run(work)
            views = await db["views"].find({}).sort("_id").to_list()
            facts = await db["facts"].find({}).to_list()
        finally:
            await client.close()

    assert views == [
        {"_id": "T-1", "assignee": "ada", "seen": 2, "created": 1},
        {"_id": "T-2", "n": 110},
        {"_id": "T-3", "a": {"b": 1, "c": 2}},
        {"_id": "T-4", "n": 1, "seen": 1},
        {"_id": "T-5", "kept": True},
    ]
    assert facts == [{"_id": "T-1", "version": 2}]
    assert statements.by_collection == {"transactions": 1, "views": 9, "facts": 1}, "fourteen writes queued, ten sent"


async def test_a_new_documents_later_replaces_fold_into_its_insert_and_a_conditional_replace_needs_its_match(tmp_path):
    pending, held = {"state": {"$eq": "pending"}}, {"state": {"$eq": "held"}}
    updates, inserts = DocumentsSent(), DocumentsSent("insert", "documents")
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[updates, inserts])
        db = client["replaced"]
        uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=tmp_path / "replaced.lock")
        await db["deliveries"].insert_many([{"_id": "D-1", "state": "pending"}, {"_id": "D-2", "state": "sent"}])
        inserts.by_collection.clear()

        async def work(tx) -> None:
            tx.insert_later("deliveries", {"_id": "D-3", "state": "held", "body": "planned"})
            tx.replace_later("deliveries", {"_id": "D-3", "state": "pending", "body": "released"}, condition=held)
            tx.replace_later("deliveries", {"_id": "D-1", "state": "suppressed"}, condition=pending)
            tx.replace_later("deliveries", {"_id": "D-1", "state": "suppressed", "reason": "cancelled"}, condition=pending)
            tx.replace_later("deliveries", {"_id": "D-2", "state": "suppressed"}, condition=pending)  # sent: no match
            tx.update_later("deliveries", "D-4", {"$set": {"state": "held"}}, upsert=True)
            tx.replace_later("deliveries", {"_id": "D-4", "state": "pending"}, condition=held)  # asks the stored one

        try:
            await uow.run(work)
            deliveries = await db["deliveries"].find({}).sort("_id").to_list()
        finally:
            await client.close()

    assert deliveries == [
        {"_id": "D-1", "state": "suppressed", "reason": "cancelled"},
        {"_id": "D-2", "state": "sent"},
        {"_id": "D-3", "state": "pending", "body": "released"},
        {"_id": "D-4", "state": "pending"},
    ]
    assert inserts.by_collection == {"deliveries": 1}, "D-3's insert carried its released version"
    assert updates.by_collection == {"transactions": 1, "deliveries": 4}, "D-1 once, D-2 once, D-4 twice"


async def test_conditional_updates_fold_when_each_expects_what_the_one_before_leaves(tmp_path):
    """Routing's capacity claims: each expects the agent's version the one before it leaves, so one write,
    guarded by the first version, does them all; a claim that expects another version is not folded, and
    as an upsert that matches nothing it fails the transaction (nothing of it is stored)."""
    updates = DocumentsSent()
    claim = {"$inc": {"load": 1, "version": 1}, "$set": {"last": "T"}}
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[updates])
        db = client["claims"]
        uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=tmp_path / "claims.lock")
        await db["agents"].insert_many([{"_id": "ada", "load": 0, "version": 3}, {"_id": "bob", "load": 0, "version": 3}])

        async def claims(tx) -> None:
            for version in (3, 4, 5):
                tx.update_later("agents", "ada", {**claim, "$set": {"last": f"T-{version}"}}, upsert=True,
                                condition={"version": version})
            tx.update_later("agents", "bob", claim, upsert=True, condition={"version": 3})

        async def stale(tx) -> None:
            tx.update_later("agents", "bob", claim, upsert=True, condition={"version": 4})
            tx.update_later("agents", "bob", claim, upsert=True, condition={"version": 4})  # not what the first leaves

        try:
            await uow.run(claims)
            folded = dict(updates.by_collection)
            with pytest.raises(BulkWriteError) as failed:
                await uow.run(stale)
            agents = await db["agents"].find({}).sort("_id").to_list()
        finally:
            await client.close()

    assert folded == {"transactions": 1, "agents": 2}, "ada's three claims sent as one"
    assert [error["code"] for error in failed.value.details["writeErrors"]] == [11000]  # the duplicate _id
    assert agents == [
        {"_id": "ada", "load": 3, "version": 6, "last": "T-5"},
        {"_id": "bob", "load": 1, "version": 4, "last": "T"},
    ]


async def test_only_the_embedded_server_gets_the_write_that_opens_a_transaction(tmp_path):
    """The embedded server (the one given a transaction lock) opens a transaction at its first write;
    against MongoDB the unit of work sends only what the work does."""
    commands = CommandNames()
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url, tz_aware=True, event_listeners=[commands])
        db = client["opening_write"]
        embedded = UnitOfWork(client, db, Outbox(db).write, transaction_lock=tmp_path / "opening_write.lock")
        plain = UnitOfWork(client, db, Outbox(db).write)

        def insert(ticket_id: str):
            async def work(tx) -> None:
                await db["tickets"].insert_one({"_id": ticket_id}, session=tx.session)

            return work

        try:
            commands.names.clear()
            await embedded.run(insert("T-1"))
            on_embedded = list(commands.names)
            commands.names.clear()
            await plain.run(insert("T-2"))
            on_plain = list(commands.names)
        finally:
            await client.close()

    assert on_embedded == ["update", "insert", "commitTransaction"]
    assert on_plain == ["insert", "commitTransaction"]

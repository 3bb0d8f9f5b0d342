"""Group commit against the real Mongo-wire server: shared transactions, and each caller's own answer."""

import asyncio

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import TicketClosed
from shared.group_commit import GroupCommit
from shared.launcher.servers import mongo_wire_server
from shared.logging import correlated
from shared.mongo import UnitOfWork
from shared.outbox import Outbox

pytestmark = pytest.mark.integration


class Refused(Exception):
    pass


@pytest.fixture
async def unit_of_work(tmp_path):
    with mongo_wire_server(tmp_path) as url:
        client = AsyncMongoClient(url, tz_aware=True)
        db = client["group_commit"]
        try:
            yield UnitOfWork(client, db, Outbox(db).write, transaction_lock=tmp_path / "group_commit.lock"), db
        finally:
            await client.close()


def close(db, ticket_id: str, effects: list[str], *, refuse: bool = False):
    """A use case's work: a write, an event and an effect; refused after it wrote, if asked."""

    async def work(tx) -> str:
        await db["tickets"].insert_one({"_id": ticket_id}, session=tx.session)
        tx.publish(topics.TICKETS, new_event(TicketClosed(ticket_id=ticket_id, closed_at=utc_now()),
                                             source="tests", subject=ticket_id))
        tx.on_commit(lambda: effects.append(ticket_id))
        if refuse:
            raise Refused(ticket_id)
        return ticket_id

    return work


async def test_concurrent_work_shares_transactions_and_each_caller_gets_its_own_result(unit_of_work):
    uow, db = unit_of_work
    commits, effects = [], []
    uow.after_commit(lambda: commits.append(1))
    grouped = GroupCommit(uow, max_group=50)

    results = await asyncio.gather(*(grouped.run(close(db, f"T-{n}", effects)) for n in range(40)))

    assert results == [f"T-{n}" for n in range(40)]
    assert len(commits) <= 3, "40 concurrent callers share a few transactions, not one each"
    assert sorted(effects) == sorted(results)
    assert len([d async for d in db["outbox"].find({})]) == 40


async def test_work_that_arrives_while_the_group_waits_for_the_lock_joins_that_group(unit_of_work):
    """Under a long transaction (a consumer's batch), a round's records that return one by one still share
    one turn of the lock, not one turn for the first and another for the rest."""
    uow, db = unit_of_work
    commits, effects = [], []
    uow.after_commit(lambda: commits.append(1))
    grouped = GroupCommit(uow, max_group=50)
    holding, release = asyncio.Event(), asyncio.Event()

    async def long_transaction(tx) -> None:
        holding.set()
        await release.wait()

    holder = asyncio.ensure_future(uow.run(long_transaction))
    await holding.wait()
    first = asyncio.ensure_future(grouped.run(close(db, "T-first", effects)))
    await asyncio.sleep(0.05)  # its committer is waiting for the lock by now
    rest = [asyncio.ensure_future(grouped.run(close(db, f"T-{n}", effects))) for n in range(19)]
    await asyncio.sleep(0.05)
    release.set()

    assert await asyncio.gather(first, *rest) == ["T-first", *(f"T-{n}" for n in range(19))]
    await holder
    assert len(commits) == 1, "the twenty shared the transaction that began once the lock was free"
    assert len(effects) == 20


async def test_each_work_runs_in_its_callers_context_though_another_task_commits_it(unit_of_work):
    """So an event a request's work creates carries that request's X-Correlation-Id, not another's."""
    uow, db = unit_of_work
    grouped = GroupCommit(uow, max_group=50)

    async def request(n: int) -> str:
        with correlated(f"request-{n}"):
            return await grouped.run(close(db, f"C-{n}", []))

    assert await asyncio.gather(*(request(n) for n in range(20))) == [f"C-{n}" for n in range(20)]
    published = {d["key"]: d["correlation_id"] async for d in db["outbox"].find({})}
    assert published == {f"C-{n}": f"request-{n}" for n in range(20)}


async def test_a_refused_or_failing_work_fails_only_its_own_caller_and_effects_run_once(unit_of_work):
    uow, db = unit_of_work
    effects: list[str] = []
    await db["tickets"].insert_one({"_id": "T-taken"})
    grouped = GroupCommit(uow, max_group=50)
    works = [close(db, f"T-{n}", effects) for n in range(30)]
    works[7] = close(db, "T-refused", effects, refuse=True)  # refused after it wrote
    works[19] = close(db, "T-taken", effects)  # a write the server refuses: it may abort the transaction

    outcomes = await asyncio.gather(*(grouped.run(work) for work in works), return_exceptions=True)

    assert isinstance(outcomes[7], Refused) and isinstance(outcomes[19], DuplicateKeyError)
    kept = [f"T-{n}" for n in range(30) if n not in (7, 19)]
    assert [outcome for n, outcome in enumerate(outcomes) if n not in (7, 19)] == kept
    assert sorted(effects) == sorted(kept), "each committed work's effect ran once; a refused one's never"
    stored = {d["_id"] async for d in db["tickets"].find({})}
    assert stored == {*kept, "T-taken"}
    assert sorted([d["key"] async for d in db["outbox"].find({})]) == sorted(kept)


async def test_a_group_reads_what_its_works_need_in_one_prefetch_before_they_run(unit_of_work):
    uow, db = unit_of_work
    await db["customers"].insert_many([{"_id": f"cust-{n}", "name": f"Customer {n}"} for n in range(30)])
    prefetched: list[list[str]] = []

    async def prefetch(tx, customer_ids) -> None:
        prefetched.append(list(customer_ids))
        found = await db["customers"].find({"_id": {"$in": list(customer_ids)}}, session=tx.session).to_list()
        tx.cache["customers"] = {document["_id"]: document for document in found}

    def greet(customer_id: str):
        async def work(tx) -> str:
            return tx.cache["customers"][customer_id]["name"]  # read from the prefetch, no round trip of its own
        return work

    grouped = GroupCommit(uow, max_group=50, prefetch=prefetch)
    first = asyncio.ensure_future(grouped.run(close(db, "T-first", [])))  # alone: the rest wait for its transaction
    await asyncio.sleep(0)

    names = await asyncio.gather(*(grouped.run(greet(f"cust-{n}"), needs=f"cust-{n}") for n in range(30)))

    assert names == [f"Customer {n}" for n in range(30)] and await first == "T-first"
    assert prefetched == [[f"cust-{n}" for n in range(30)]], "one prefetch for the waiting group, in order"

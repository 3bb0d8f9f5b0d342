"""MongoDB adapters for insights: the ticket facts, one document per ticket, and the reports' queries on them.

What the events said of a ticket (its fold `state`) is kept in `fact_states`, apart from the flat
fact the reports read in `facts`: reports then read small documents (on the embedded server, whose
aggregation parses each whole document, that halves a summary's time). The consumer reads a
batch's states with one `_id` `$in` query (`prefetch`) and queues a replace per state and per fact that an
event changed, a ticket's later events in the batch taking the place of its earlier ones' (`Transaction.replace_later`),
sent as one bulk write per collection when the batch is done. Reports filter on `sort_key` (creation time then
ticket id, so a time range and the drill-down's cursor are one range) behind an `$eq` on at most one
dimension, and every filterable dimension has an index led by it and ending in `sort_key`: the embedded
server and MongoDB both serve that from the index. Aggregation pipelines use only `$match`
and `$group` on one field with `$sum` and `$push`: no expression, which the embedded server would
evaluate in Python for every document (`split_by_wait_time` is one more `$match` with a range and
count per threshold, not a `$cond`).
"""

from collections.abc import AsyncIterator, Iterable
from functools import cached_property

from pymongo import ASCENDING

from services.insights.domain import FILTERS, TIME_GROUPS, fact_document, new_state, row_fields
from shared.mongo import KnownDocuments, Transaction
from shared.mongo_filters import eq

FACTS = "facts"
STATES = "fact_states"
INDEXED_DIMENSIONS = tuple(dict.fromkeys(FILTERS.values()))


class FactsRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._collection = tx.db[FACTS]
        self._states = KnownDocuments(tx.db[STATES], tx)

    async def ensure_indexes(self) -> None:
        await self._collection.create_index([("sort_key", ASCENDING)])
        for field in INDEXED_DIMENSIONS:
            await self._collection.create_index([(field, ASCENDING), ("sort_key", ASCENDING)])
        await self._collection.create_index([("at_risk_due_ms", ASCENDING)])

    # --- the consumer's side ------------------------------------------------------------------

    async def prefetch(self, ticket_ids: Iterable[str]) -> None:
        await self._states.load(ticket_ids)

    async def state(self, ticket_id: str) -> dict:
        document = await self._states.get(ticket_id)
        return document["state"] if document else new_state()

    def save_later(self, ticket_id: str, state: dict) -> None:
        self._states.replace_later({"_id": ticket_id, "state": state})
        self._tx.replace_later(FACTS, fact_document(ticket_id, state))

    # --- reports ------------------------------------------------------------------------------

    async def summary(self, match: dict, group_by: str | None, thresholds: list[int]) -> list[dict]:
        """One row per group; days, weeks and hours come as quarter hours (`created_quarter`) to roll up."""
        if group_by is None:
            key: object = None
        elif group_by in TIME_GROUPS:
            key = "$created_quarter"
        else:
            key = f"${FILTERS.get(group_by, group_by)}"
        pipeline = [{"$match": match}, {"$group": {"_id": key, **row_fields()}}]
        rows = {row["_id"]: row for row in await (await self._collection.aggregate(pipeline)).to_list()}
        for limit in thresholds:  # a count per threshold: a range in $match, where a $cond would cost a lot more
            within = [{"$match": {**match, "wait_seconds": {"$lte": limit}}}, {"$group": {"_id": key, "n": {"$sum": 1}}}]
            for counted in await (await self._collection.aggregate(within)).to_list():
                rows[counted["_id"]][f"wait_within_{limit}"] = counted["n"]
        return list(rows.values())

    async def page(self, match: dict, limit: int) -> list[dict]:
        return await self._collection.find(match).sort("sort_key", ASCENDING).limit(limit).to_list()

    async def stream(self, match: dict, batch_size: int = 1000) -> AsyncIterator[dict]:
        """Every fact `match` selects, in creation order, a batch at a time: an export never holds them all."""
        cursor = self._collection.find(match, batch_size=batch_size).sort("sort_key", ASCENDING)
        async for document in cursor:
            yield document

    async def at_risk(self, filters: dict, limit: int) -> list[dict]:
        query = {"at_risk_due_ms": {"$gte": 0}, **eq(filters)}
        return await self._collection.find(query).sort("at_risk_due_ms", ASCENDING).limit(limit).to_list()


class InsightsTransaction(Transaction):
    """A transaction of insights', carrying its repository."""

    @cached_property
    def facts(self) -> FactsRepository:
        return FactsRepository(self)

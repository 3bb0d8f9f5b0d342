"""MongoDB adapters for planning: the recorded history, the tickets and presence it is read from, and
simulation jobs.

History is written only as increments queued with the transaction that saw the fact
(`Transaction.update_later`: one bulk write per collection per transaction, no round trip of its
own), as upserts on the bucket's `_id`, a batch's increments of one bucket summed into one. It is
read by range of bucket start, from its index.

A simulation job is one document, written by the replica that runs it and read by any, so a job's
id works whichever replica answers.
"""

from collections.abc import Iterable

from pymongo import ASCENDING, ReturnDocument

from services.routing.planning.history import Increment
from shared.mongo import Transaction
from shared.mongo_filters import eq

HISTORY = "planning_history"
SIMULATIONS = "planning_simulations"


class PlanningRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._history = tx.db[HISTORY]
        self._tickets = tx.db["tickets"]
        self._agents = tx.db["agents"]
        self._simulations = tx.db[SIMULATIONS]
        self._session = tx.session

    async def ensure_indexes(self) -> None:
        await self._history.create_index([("bucket_ms", ASCENDING)])
        await self._tickets.create_index([("created_ms", ASCENDING)])
        await self._simulations.create_index([("expires_ms", ASCENDING)])

    def record(self, increments: Iterable[Increment]) -> None:
        """Queued with the transaction's other writes."""
        for increment in increments:
            inserted = {"bucket_ms": increment.bucket_ms, "channel": increment.channel, "skills": increment.skills}
            self._tx.update_later(
                HISTORY, increment.key, {"$inc": increment.counts, "$setOnInsert": inserted}, upsert=True
            )

    async def buckets(self, from_ms: int, to_ms: int) -> list[dict]:
        return await self._history.find(
            {"bucket_ms": {"$gte": from_ms, "$lt": to_ms}}, {"_id": 0}, session=self._session
        ).to_list()

    async def first_bucket_ms(self) -> int | None:
        first = await self._history.find({}, {"bucket_ms": 1}, session=self._session).sort(
            "bucket_ms", ASCENDING).limit(1).to_list()
        return first[0]["bucket_ms"] if first else None

    async def available_since_ms(self) -> list[int]:
        """When each agent available now became so: their open stretch of available time."""
        rows = await self._agents.find(eq(status="available"), {"presence_changed_ms": 1}, session=self._session).to_list()
        return [row["presence_changed_ms"] for row in rows if row.get("presence_changed_ms") is not None]

    async def tickets_created(self, from_ms: int, to_ms: int, limit: int) -> list[dict]:
        """Routing's tickets that arrived in [from, to), oldest first: a recorded period to replay."""
        return await self._tickets.find(
            {"created_ms": {"$gte": from_ms, "$lt": to_ms}},
            {"required_skills": 1, "skill_levels": 1, "channel": 1, "language": 1, "priority": 1, "category": 1,
             "customer_id": 1, "created_ms": 1, "assigned_ms": 1, "finished_ms": 1, "state": 1, "assignee_id": 1},
            session=self._session,
        ).sort("created_ms", ASCENDING).limit(limit).to_list()

    async def add_simulation(self, job: dict) -> None:
        await self._simulations.insert_one(job, session=self._session)

    async def simulation(self, job_id: str) -> dict | None:
        return await self._simulations.find_one({"_id": job_id}, session=self._session)

    async def update_simulation(self, job_id: str, changes: dict) -> dict | None:
        """The job after `changes`, which carries whether someone asked to cancel it."""
        return await self._simulations.find_one_and_update(
            {"_id": job_id}, {"$set": changes}, return_document=ReturnDocument.AFTER, session=self._session
        )

    async def ask_to_cancel(self, job_id: str) -> dict | None:
        """Marks a running job for its replica to stop; a finished one is left as it is. The job, or None."""
        asked = await self._simulations.find_one_and_update(
            {"_id": job_id, **eq(status="running")}, {"$set": {"cancel_asked": True}},
            return_document=ReturnDocument.AFTER, session=self._session,
        )
        return asked or await self.simulation(job_id)

    async def forget_simulations(self, before_ms: int) -> None:
        await self._simulations.delete_many({"expires_ms": {"$lt": before_ms}}, session=self._session)

"""Transactional outbox: events are stored with the state change, then relayed to Kafka in order."""

import asyncio
import logging
import time

from faststream.kafka import KafkaBroker
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.clock import now_ms
from shared.kafka_binding import ContentMode, encode
from shared.metrics import PlatformMetrics
from shared.mongo import Lease, Transaction, UnitOfWork
from shared.mongo_filters import eq
from shared.wakeup import IdleBackoff, Wakeup

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["outbox"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("sent", ASCENDING), ("created_ns", ASCENDING)])
        await self.collection.create_index([("sent", ASCENDING), ("sent_ms", ASCENDING)])

    async def write(self, transaction: Transaction) -> None:
        """Store the transaction's events; `created_ns` orders them for the relay."""
        if not transaction.events:
            return
        created_ms = now_ms()
        await self.collection.insert_many(
            [
                {
                    "_id": str(event.id),
                    "topic": topic,
                    "key": event.subject,
                    "type": event.type,
                    "correlation_id": event.correlationid,
                    "value": event.to_json().decode(),
                    "created_ns": time.time_ns() + position,
                    "created_ms": created_ms,
                    "sent": False,
                }
                for position, (topic, event) in enumerate(transaction.events)
            ],
            session=transaction.session,
        )


class OutboxRelay:
    """Publishes unsent outbox events in creation order, then marks them sent.

    One replica relays at a time (a lease), which keeps each entity's events in order. Delivery
    is at-least-once: a crash between publishing and marking re-sends the same event ids, which
    consumers drop through their inbox (or, for idempotent handlers, apply again to no effect).

    Events are stored in the JSON event format and sent in `content_mode` (structured by default).

    A commit in this process wakes the relay at once. After a round that relayed less than a full
    batch, it first waits `linger_seconds`, so what commits meanwhile goes out together in the next
    round (a round is a read and a write under the service's transaction lock, and a record batch
    for each partition it touches); an event after a quiet spell still goes out at once. Otherwise
    it looks again after the poll interval, and when it keeps finding nothing it waits longer each
    time, up to `IDLE_BACKOFF` polls, so an idle service costs next to nothing: a look that finds
    nothing is one indexed read, outside any transaction, and the lease is claimed only once there
    is something to send (an idle replica renews nothing).
    """

    IDLE_BACKOFF = 8

    def __init__(
        self,
        outbox: Outbox,
        uow: UnitOfWork,
        broker: KafkaBroker,
        lease: Lease,
        metrics: PlatformMetrics,
        *,
        poll_interval_seconds: float,
        linger_seconds: float = 0,
        content_mode: ContentMode = ContentMode.STRUCTURED,
        batch_size: int = 500,
        retention_seconds: float = 24 * 3600,
    ) -> None:
        self._outbox = outbox.collection
        self._uow = uow
        self._broker = broker
        self._lease = lease
        self._metrics = metrics
        self._poll_interval = poll_interval_seconds
        self._linger = linger_seconds
        self._content_mode = content_mode
        self._batch_size = batch_size
        self._retention_ms = int(retention_seconds * 1000)
        self._wakeup = Wakeup()

    def wake(self) -> None:
        """Called after a commit that stored events, so they go out without waiting for a poll."""
        self._wakeup.set()

    async def run(self) -> None:
        backoff = IdleBackoff(self._poll_interval, self.IDLE_BACKOFF)
        while True:
            try:
                published = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
            wait = backoff.next_wait(found_work=published > 0)
            if published >= self._batch_size:
                continue  # more may be waiting: no pause
            if published:
                await asyncio.sleep(self._linger)
            await self._wakeup.sleep(wait)

    async def replay_since(self, seconds: float) -> None:
        """Queue recently sent events again, for a broker that lost them (the embedded one restarted)."""
        since = now_ms() - int(seconds * 1000)
        await self._uow.run(
            lambda tx: self._outbox.update_many(
                eq(sent=True) | {"sent_ms": {"$gte": since}}, {"$set": {"sent": False}}, session=tx.session
            )
        )

    async def relay_once(self) -> int:
        if await self._outbox.find_one(eq(sent=False), {"_id": 1}) is None:
            self._metrics.outbox_lag.set(0)
            return 0  # nothing to relay, found without opening a transaction: an idle poll costs one read
        if not await self._lease.acquire():
            return 0  # another replica relays
        pending = await self._uow.read_committed(self._pending)
        self._metrics.outbox_lag.set((now_ms() - pending[0]["created_ms"]) / 1000 if pending else 0)
        if not pending:
            return 0
        confirmations = []
        for row in pending:
            value, headers = encode(row["value"].encode(), self._content_mode)
            confirmations.append(
                await self._broker.publish(
                    value,
                    row["topic"],
                    key=row["key"].encode(),
                    headers=headers,
                    correlation_id=row["correlation_id"],
                    no_confirm=True,
                )
            )
        await asyncio.gather(*confirmations)
        await self._uow.run(lambda tx: self._mark_sent(tx, [row["_id"] for row in pending]))
        for row in pending:
            self._metrics.events_published.labels(topic=row["topic"], type=row["type"]).inc()
        return len(pending)

    async def _pending(self) -> list[dict]:
        """Read committed (`UnitOfWork.read_committed`): a row of a transaction still in flight is never relayed."""
        return (
            await self._outbox.find(eq(sent=False))
            .sort("created_ns", ASCENDING)
            .limit(self._batch_size)
            .to_list()
        )

    async def _mark_sent(self, tx: Transaction, ids: list[str]) -> None:
        await self._outbox.update_many(
            {"_id": {"$in": ids}}, {"$set": {"sent": True, "sent_ms": now_ms()}}, session=tx.session
        )

    async def purge_sent(self) -> None:
        cutoff = now_ms() - self._retention_ms
        await self._uow.run(
            lambda tx: self._outbox.delete_many(eq(sent=True) | {"sent_ms": {"$lt": cutoff}}, session=tx.session)
        )

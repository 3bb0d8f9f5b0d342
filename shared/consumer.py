"""Consuming events: one transaction per polled batch, idempotent, retry-then-dead-letter.

- Records are read in either CloudEvents content mode (`shared.kafka_binding`).
- Each batch is applied in one MongoDB transaction, with the `source` and `id` of the events it
  processed recorded in the service's inbox, so a redelivered event is skipped and offsets are
  committed once per batch, for the partitions it read. A service whose handlers are idempotent by
  design (a read model folded as sets and maxima) keeps no inbox: a redelivered event changes
  nothing there anyway.
- Before the handlers, the service's `Prefetch` reads what the batch needs with one query per
  collection, so a batch costs a few round trips whatever its size.
- If the batch fails, its events are retried one by one with backoff, so one poison message
  cannot hold back the others; after the last attempt it goes to `<topic>.dlq`, whole, with the
  reason, the consumer group and the attempt count in headers beside its own, and the partition
  moves on.
- A message that is not a valid event, or that a handler rejects (`RejectedEvent`), is
  dead-lettered at once: retrying cannot fix it.
- When MongoDB or Kafka itself is unreachable, nothing is dead-lettered: the batch is not
  acknowledged and is redelivered once the infrastructure is back.
"""

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from shared import topics
from shared.clock import now_ms
from shared.dead_letters import DeadLetters
from shared.envelope import Envelope
from shared.events import InvalidEvent, Payload, UnknownEventType
from shared.kafka_admin import end_offsets
from shared.kafka_binding import read_event
from shared.logging import correlated
from shared.metrics import PlatformMetrics
from shared.mongo import Transaction, UnitOfWork

log = logging.getLogger(__name__)

# How long the broker may hold an empty fetch: twice aiokafka's 500 ms, so an idle consumer asks half as
# often. Longer costs latency on the embedded broker, which does not always answer a fetch of several
# partitions as soon as one gets a record: a hop took up to 0.3 s at 2 s and 0.9 s at 3 s, and 0.05-0.12 s
# at 1 s as at 0.5 s (measured with 10 records over 3 topics of 6 partitions).
FETCH_MAX_WAIT_MS = 1000
# How long aiokafka's background fetcher waits when nothing happens before it looks again. It wakes at once
# when a fetch returns, records are consumed or the assignment changes, so its 200 ms default only buys
# idle wake-ups: five a second, 0.8-0.9 ms/s of an idle consumer's CPU (2.0 -> 1.1 ms/s for a bare one).
CONSUMER_TIMEOUT_MS = 1000
# The shortest session Kafka brokers accept by default (group.min.session.timeout.ms): a consumer that
# died is noticed in 6 s rather than aiokafka's 10, and the embedded broker, which holds a join for about
# half the session, lets a (re)started service in after 3 s instead of 5. Heartbeats stay at a third.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000

Handler = Callable[[Transaction, Envelope], Awaitable[None]]
Prefetch = Callable[[Transaction, Sequence[Envelope]], Awaitable[None]]
"""Called once per batch, before its handlers, with the events they will see: it reads what they
need in one query per collection into `Transaction.cache`."""

INFRASTRUCTURE_ERRORS = (ConnectionFailure, KafkaError, OSError)


class RejectedEvent(Exception):
    """A valid event that this service cannot accept (say, about an unknown ticket)."""


@dataclass(frozen=True)
class Subscription:
    """A topic a service consumes and the handler for each event type it cares about."""

    topic: str
    handlers: Mapping[type[Payload], Handler]


def event_key(event: Envelope) -> tuple[str, str]:
    """What makes an event the same event, as CloudEvents defines it: its `source` and `id`."""
    return event.source, event.id


class Inbox:
    """The events (by `source` and `id`) a consumer group has processed, kept long enough to outlive
    redelivery.

    Records written before events were told apart by `source` too are keyed `<group>:<id>`; until
    they expire (`retention_seconds` after they were written) that key also counts as seen, so an
    upgrade does not process again what the previous version processed.
    """

    def __init__(self, db: AsyncDatabase, retention_seconds: float = 7 * 24 * 3600) -> None:
        self.collection = db["inbox"]
        self._retention_ms = int(retention_seconds * 1000)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("expires_ms", ASCENDING)])

    async def unseen(self, transaction: Transaction, group: str, events: Sequence[Envelope]) -> list[Envelope]:
        """The events not processed yet, each once, and marks them processed in `transaction`."""
        by_key = {json.dumps([group, *event_key(event)]): event for event in events}
        legacy_keys = {f"{group}:{event.id}": key for key, event in by_key.items()}
        seen = await self.collection.find(
            {"_id": {"$in": [*by_key, *legacy_keys]}}, {"_id": 1}, session=transaction.session
        ).to_list()
        for row in seen:
            by_key.pop(legacy_keys.get(row["_id"], row["_id"]), None)
        if by_key:
            expires_ms = now_ms() + self._retention_ms
            await self.collection.insert_many(
                [{"_id": key, "expires_ms": expires_ms} for key in by_key], session=transaction.session
            )
        return list(by_key.values())

    async def purge_expired(self, tx: Transaction) -> None:
        await self.collection.delete_many({"expires_ms": {"$lt": now_ms()}}, session=tx.session)


class EventConsumer:
    """One Kafka consumer per service, across all the topics it subscribes to.

    A single consumer per consumer group means a service's own subscriptions never trigger
    rebalances of one another. With no `inbox`, the handlers must be idempotent by design.
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        *,
        group: str,
        uow: UnitOfWork,
        inbox: Inbox | None,
        broker: KafkaBroker,
        dead_letters: DeadLetters,
        metrics: PlatformMetrics,
        max_attempts: int,
        backoff_seconds: float,
        prefetch: Prefetch | None = None,
    ) -> None:
        self._handlers = {
            (subscription.topic, payload): handler
            for subscription in subscriptions
            for payload, handler in subscription.handlers.items()
        }
        self.topics = sorted({subscription.topic for subscription in subscriptions})
        self._group = group
        self._uow = uow
        self._inbox = inbox
        self._broker = broker
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._prefetch = prefetch

    def subscribe(self, batch_size: int) -> None:
        @self._broker.subscriber(
            *self.topics,
            group_id=self._group,
            batch=True,
            max_records=batch_size,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            consumer_timeout_ms=CONSUMER_TIMEOUT_MS,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            parser=_parse_batch_whatever_its_headers,
            decoder=_records_as_they_are,
            title=self._group,
            description="Handles " + ", ".join(f"{payload.EVENT_TYPE} on {topic}" for topic, payload in self._handlers),
        )
        async def on_batch(message: KafkaMessage) -> None:
            try:
                await self.consume(message.raw_message)
            except Exception:
                await message.nack()  # back to each partition's first record of the batch: redelivered
                raise  # (a cancelled batch, the service stopping, is redelivered from the last commit anyway)
            consumer = message.consumer
            await consumer.commit(offsets_after(message.raw_message, still_assigned=consumer.assignment()))

    async def consume(self, records: Sequence[ConsumerRecord]) -> None:
        try:
            await self._consume(records)
        except INFRASTRUCTURE_ERRORS:
            log.warning("infrastructure unavailable; the batch will be redelivered")
            await asyncio.sleep(self._backoff * self._max_attempts)
            raise

    async def _consume(self, records: Sequence[ConsumerRecord]) -> None:
        wanted: list[tuple[ConsumerRecord, Envelope]] = []
        for record in records:
            try:
                event = read_event(record.value, record.headers)
            except UnknownEventType:
                self._count(record.topic, "unknown", "ignored")  # outside input: keep label values bounded
                continue
            except InvalidEvent as invalid:
                await self._dead_letter(record, f"invalid event: {invalid}", attempts=1, reason="invalid")
                continue
            if (record.topic, type(event.data)) in self._handlers:
                wanted.append((record, event))
            else:
                self._count(record.topic, event.type, "ignored")
        if not wanted:
            return
        try:
            await self._uow.run(lambda tx: self._apply(tx, wanted))
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception:
            log.info("a batch failed; retrying its %d events one by one", len(wanted))
            for record, event in wanted:
                await self._apply_alone(record, event)

    async def _apply(self, transaction: Transaction, batch: Sequence[tuple[ConsumerRecord, Envelope]]) -> None:
        events = [event for _, event in batch]
        if self._inbox is None:
            fresh = list({event_key(event): event for event in events}.values())
        else:
            fresh = await self._inbox.unseen(transaction, self._group, events)
        fresh_keys = {event_key(event) for event in fresh}
        if fresh and self._prefetch is not None:
            await self._prefetch(transaction, fresh)
        for record, event in batch:
            if event_key(event) in fresh_keys:
                fresh_keys.discard(event_key(event))  # a batch may carry the same event twice
                with correlated(event.correlationid):
                    await self._handlers[record.topic, type(event.data)](transaction, event)
                self._count(record.topic, event.type, "processed")
            else:
                self._count(record.topic, event.type, "duplicate")

    async def _apply_alone(self, record: ConsumerRecord, event: Envelope) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._uow.run(lambda tx: self._apply(tx, [(record, event)]))
                return
            except INFRASTRUCTURE_ERRORS:
                raise
            except RejectedEvent as rejected:
                await self._dead_letter(record, f"rejected: {rejected}", attempts=attempt, reason="rejected")
                return
            except Exception as error:
                if attempt == self._max_attempts:
                    log.exception("event %s failed %d times; dead-lettering it", event.id, attempt)
                    await self._dead_letter(
                        record, f"failed: {type(error).__name__}: {error}", attempts=attempt, reason="failed"
                    )
                    return
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))

    async def _dead_letter(self, record: ConsumerRecord, error: str, *, attempts: int, reason: str) -> None:
        await self._dead_letters.park(
            record.value,
            topic=record.topic,
            key=record.key,
            headers=record.headers,
            error=error,
            consumer_group=self._group,
            attempts=attempts,
            details={"dlq-original-partition": str(record.partition), "dlq-original-offset": str(record.offset)},
        )
        self._metrics.dead_letters.labels(topic=record.topic, consumer_group=self._group, reason=reason).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, error[:300])

    def _count(self, topic: str, event_type: str, outcome: str) -> None:
        self._metrics.events_consumed.labels(topic=topic, type=event_type, outcome=outcome).inc()


def offsets_after(
    records: Sequence[ConsumerRecord], *, still_assigned: Collection[TopicPartition]
) -> dict[TopicPartition, int]:
    """What a batch commits: the offset after its last record, for the partitions it read that are still
    this consumer's (a rebalance may have moved one meanwhile: its new owner gets it again) and no others.

    aiokafka's `commit()` with no argument writes every assigned partition's offset, changed or not. The
    embedded broker keeps each committed offset as an object of its own, so a service on four topics paid
    four writes per batch where one or two had moved."""
    after: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        if partition in still_assigned:
            after[partition] = max(after.get(partition, 0), record.offset + 1)
    return after


async def _parse_batch_whatever_its_headers(records: tuple[ConsumerRecord, ...], parse: Callable) -> KafkaMessage:
    """FastStream's batch parser decodes every header value as UTF-8 text: a record with a binary header
    (or a null one) would fail its whole batch, which would be redelivered and fail again, forever.
    It is given copies with readable headers; the message keeps the records themselves, which are all
    the consumer reads (and parks whole)."""
    message = await parse(tuple(_with_readable_headers(record) for record in records))
    message.raw_message = records
    return message


def _with_readable_headers(record: ConsumerRecord) -> ConsumerRecord:
    readable = tuple((name, (value or b"").decode(errors="replace").encode()) for name, value in record.headers)
    return record if readable == tuple(record.headers) else dataclasses.replace(record, headers=readable)


async def _records_as_they_are(message: KafkaMessage) -> object:
    """No decoding: the consumer reads the records (`raw_message`) in their content mode itself."""
    return message.body


class ConsumerLagMonitor:
    """Exports how far a consumer group is behind on each topic it reads, and how full its DLQs are.

    It compares the group's committed offsets with the topics' end offsets (lag, summed over
    partitions; a partition with no commit yet counts from its beginning, as
    `auto_offset_reset="earliest"` would read it), and measures the dead-letter topics this group
    writes to (end minus beginning offset). It never joins the group, so it causes no rebalance.
    Every replica of a service reports the same group's numbers: aggregate with `max`, not `sum`.

    It measures when `/metrics` is read (`refresh`), at most once every `interval_seconds`: a
    service that nobody scrapes (the embedded platform) spends nothing on it, where a measurement
    every 15 s cost the embedded broker's storage about half of its idle CPU; one scraped every
    15 s measures as often as before, and a scrape always sees figures at most an interval old.

    Partitions' ends come from `shared.kafka_admin.end_offsets`, which corrects the embedded
    broker's: it would hide up to a whole batch per partition.
    """

    TIMEOUT_SECONDS = 5.0  # within Prometheus' default scrape timeout (10 s)

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        topics_read: Sequence[str],
        metrics: PlatformMetrics,
        *,
        interval_seconds: float,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self._topics = list(topics_read)
        self._dead_letter_topics = [topics.dead_letter(topic) for topic in self._topics]
        self._metrics = metrics
        self._interval = interval_seconds
        self._measured_at: float | None = None
        self._clients: tuple | None = None  # (admin, offsets), connected on first use and kept
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Measure again unless the last measurement is recent; on failure (Kafka down) keep the last
        values and connect again next time."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._measured_at is not None and now - self._measured_at < self._interval:
                return
            self._measured_at = now
            try:
                async with asyncio.timeout(self.TIMEOUT_SECONDS):
                    if self._clients is None:
                        self._clients = await self._connect()
                    await self.measure(*self._clients)
            except Exception as error:
                log.warning("could not measure consumer lag: %s: %s", type(error).__name__, error)
                await self.close()

    async def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            admin, offsets = clients
            await asyncio.gather(offsets.stop(), admin.close(), return_exceptions=True)

    async def _connect(self) -> tuple:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        offsets = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False)
        try:
            await admin.start()
            await offsets.start()
        except BaseException:
            await asyncio.gather(offsets.stop(), admin.close(), return_exceptions=True)
            raise
        return admin, offsets

    async def measure(self, admin, offsets) -> dict[str, int]:
        from aiokafka import TopicPartition

        await offsets.topics()  # refreshes metadata, so partitions_for_topic knows every topic
        partitions = {
            topic: [TopicPartition(topic, p) for p in sorted(offsets.partitions_for_topic(topic) or ())]
            for topic in (*self._topics, *self._dead_letter_topics)
        }
        every = [tp for tps in partitions.values() for tp in tps]
        if not every:
            return {}
        end = await end_offsets(offsets, every)
        beginning = await offsets.beginning_offsets(every)
        # Naming the partitions (rather than asking for all of the group's) also works on brokers that
        # do not implement the all-partitions form of OffsetFetch, such as the embedded one.
        read = [tp for topic in self._topics for tp in partitions[topic]]
        committed = await admin.list_consumer_group_offsets(self._group, partitions=read) if read else {}
        lags: dict[str, int] = {}
        for topic in self._topics:
            lag = 0
            for tp in partitions[topic]:
                position = committed.get(tp)
                start = position.offset if position is not None and position.offset >= 0 else beginning[tp]
                lag += max(0, end[tp] - start)
            lags[topic] = lag
            self._metrics.consumer_lag.labels(topic=topic).set(lag)
        for topic in self._dead_letter_topics:
            held = sum(max(0, end[tp] - beginning[tp]) for tp in partitions[topic])
            self._metrics.dead_letter_topic_messages.labels(topic=topic).set(held)
        return lags

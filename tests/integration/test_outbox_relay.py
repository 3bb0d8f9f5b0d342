"""The outbox relay over the real broker and nx-27017: what commits while it lingers goes out in one
round, and `OUTBOX_REPLAY_ON_START_SECONDS` sends again what went out within its window, nothing older."""

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.clock import now_ms, utc_now
from shared.envelope import Envelope, new_event
from shared.events import TicketClosed
from shared.kafka_admin import ensure_topics, read_to_end
from shared.metrics import PlatformMetrics
from shared.mongo import Lease, UnitOfWork
from shared.outbox import Outbox, OutboxRelay
from tests.support import eventually

pytestmark = pytest.mark.integration


@dataclass
class Relaying:
    """A service's outbox on its own database and topic, and a relay for it."""

    db: AsyncDatabase
    uow: UnitOfWork
    relay: OutboxRelay
    topic: str
    bootstrap: str

    async def commit(self, *tickets: str) -> list[Envelope]:
        events = [new_event(TicketClosed(ticket_id=ticket, closed_at=utc_now()), source="tests", subject=ticket)
                  for ticket in tickets]

        async def close(tx):
            for event in events:
                tx.publish(self.topic, event)

        await self.uow.run(close)
        return events

    async def sent_ms(self, event: Envelope) -> int | None:
        row = await self.db["outbox"].find_one({"_id": str(event.id)})
        return row.get("sent_ms") if row["sent"] else None

    async def on_the_topic(self) -> list[str]:
        return [json.loads(record.value)["id"] for record in await read_to_end(self.bootstrap, [self.topic])]


@pytest.fixture
async def relaying(running_platform, request):
    run = uuid.uuid4().hex[:8]
    topic = f"tests.outbox-relay.{run}"
    await ensure_topics(running_platform.bootstrap, [topic], partitions=1)
    client = AsyncMongoClient(f"mongodb://127.0.0.1:{running_platform.platform.ports.mongodb}", tz_aware=True)
    broker = KafkaBroker(running_platform.bootstrap)
    try:
        db = client[f"outbox_relay_{run}"]
        outbox = Outbox(db)
        await outbox.ensure_indexes()
        uow = UnitOfWork(client, db, outbox.write)
        await broker.start()
        relay = OutboxRelay(outbox, uow, broker, Lease(uow, "outbox-relay", "tests", ttl_seconds=10),
                            PlatformMetrics(CollectorRegistry()), poll_interval_seconds=0.1,
                            linger_seconds=getattr(request, "param", 0))
        uow.after_commit(relay.wake)
        yield Relaying(db, uow, relay, topic, running_platform.bootstrap)
    finally:
        await broker.stop()
        await client.close()


LINGER_SECONDS = 0.5


@pytest.mark.parametrize("relaying", [LINGER_SECONDS], indirect=True)
async def test_what_commits_while_the_relay_lingers_goes_out_together_in_its_next_round(relaying):
    running = asyncio.create_task(relaying.relay.run())
    try:
        (first,) = await relaying.commit("T-1")
        await eventually(lambda: relaying.sent_ms(first), timeout=10)
        (second,) = await relaying.commit("T-2")
        (third,) = await relaying.commit("T-3")
        sent = await eventually(lambda: _all_sent(relaying, [first, second, third]), timeout=10)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert sent[1] - sent[0] >= LINGER_SECONDS * 1000, "the next round waited out the linger"
    assert sent[1] == sent[2], "the two events committed during the linger went out in one round"
    assert await relaying.on_the_topic() == [str(first.id), str(second.id), str(third.id)]


async def _all_sent(relaying: Relaying, events: list[Envelope]) -> list[int] | None:
    sent = [await relaying.sent_ms(event) for event in events]
    return sent if all(ms is not None for ms in sent) else None


async def test_a_replay_on_start_sends_again_what_was_sent_within_its_window_and_nothing_older(relaying):
    old, recent = await relaying.commit("T-old", "T-recent")
    assert await relaying.relay.relay_once() == 2
    an_hour_ago = now_ms() - 3_600_000
    await relaying.db["outbox"].update_one({"_id": str(old.id)}, {"$set": {"sent_ms": an_hour_ago}})

    await relaying.relay.replay_since(600)
    assert await relaying.relay.relay_once() == 1

    assert await relaying.on_the_topic() == [str(old.id), str(recent.id), str(recent.id)], (
        "the recent event again, the old one once"
    )
    assert await relaying.relay.relay_once() == 0, "each replayed event is sent once more, not on every round"

"""`OUTBOX_REPLAY_ON_START_SECONDS`: a service started against a broker restored without its recent log
sends again what it sent within that window, and nothing older, over the real broker and nx-27017."""

import json
import uuid

import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from shared.clock import now_ms, utc_now
from shared.envelope import new_event
from shared.events import TicketClosed
from shared.kafka_admin import ensure_topics, read_to_end
from shared.metrics import PlatformMetrics
from shared.mongo import Lease, UnitOfWork
from shared.outbox import Outbox, OutboxRelay

pytestmark = pytest.mark.integration


async def test_a_replay_on_start_sends_again_what_was_sent_within_its_window_and_nothing_older(running_platform):
    run = uuid.uuid4().hex[:8]
    topic = f"tests.outbox-replay.{run}"
    await ensure_topics(running_platform.bootstrap, [topic], partitions=1)
    client = AsyncMongoClient(f"mongodb://127.0.0.1:{running_platform.platform.ports.mongodb}", tz_aware=True)
    broker = KafkaBroker(running_platform.bootstrap)
    try:
        db = client[f"outbox_replay_{run}"]
        outbox = Outbox(db)
        await outbox.ensure_indexes()
        uow = UnitOfWork(client, db, outbox.write)
        await broker.start()
        relay = OutboxRelay(outbox, uow, broker, Lease(uow, "outbox-relay", "tests", ttl_seconds=10),
                            PlatformMetrics(CollectorRegistry()), poll_interval_seconds=0.1)
        old, recent = (new_event(TicketClosed(ticket_id=ticket, closed_at=utc_now()), source="tests", subject=ticket)
                       for ticket in ("T-old", "T-recent"))

        async def close_both(tx):
            tx.publish(topic, old)
            tx.publish(topic, recent)

        await uow.run(close_both)
        assert await relay.relay_once() == 2
        an_hour_ago = now_ms() - 3_600_000
        await db["outbox"].update_one({"_id": str(old.id)}, {"$set": {"sent_ms": an_hour_ago}})

        await relay.replay_since(600)
        assert await relay.relay_once() == 1

        sent = [json.loads(record.value)["id"] for record in await read_to_end(running_platform.bootstrap, [topic])]
        assert sent == [str(old.id), str(recent.id), str(recent.id)], "the recent event again, the old one once"
        assert await relay.relay_once() == 0, "each replayed event is sent once more, not on every round"
    finally:
        await broker.stop()
        await client.close()

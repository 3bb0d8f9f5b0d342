"""Replaying a dead-letter topic puts its messages back on their original topic, once.

Runs on the suite's broker, but on a private topic pair (`ops-replay-<id>` and its `.dlq`) that no
service reads, so the shared dead-letter topics other tests inspect stay untouched. The dead
letters carry the headers `shared.consumer.EventConsumer` writes.
"""

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from shared.dlq_replay import replay
from shared.kafka_admin import ensure_topics

pytestmark = pytest.mark.integration


ORIGINAL_HEADERS = [("content-type", b"application/cloudevents+json; charset=UTF-8"), ("x-tenant", b"\xff\x00")]
"""The parked record's own headers, which go back as they came."""


async def dead_letter(bootstrap: str, dlq: str, value: bytes, key: bytes, *, group: str, error: str, offset: int):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            dlq, value, key=key,
            headers=[*ORIGINAL_HEADERS,
                     ("dlq-error", error.encode()), ("dlq-consumer-group", group.encode()), ("dlq-attempts", b"5"),
                     ("dlq-original-topic", dlq.removesuffix(".dlq").encode()),
                     ("dlq-original-partition", b"0"), ("dlq-original-offset", str(offset).encode())],
        )
    finally:
        await producer.stop()


async def test_dead_letters_are_replayed_to_their_topic_once_with_filters(running_platform):
    topic = f"ops-replay-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    bootstrap = running_platform.bootstrap
    await ensure_topics(bootstrap, [topic, dlq], 1)
    await dead_letter(bootstrap, dlq, b'{"id": "e1"}', b"t-1", group="switchboard-sla", error="failed: boom", offset=3)
    await dead_letter(bootstrap, dlq, b'{"id": "e2"}', b"t-2", group="switchboard-notify", error="failed: smtp", offset=4)
    await dead_letter(bootstrap, dlq, b"garbage", b"t-3", group="switchboard-sla", error="invalid event: x", offset=5)
    group = f"replay-{uuid.uuid4().hex[:8]}"

    listed = await replay(bootstrap, dlq, group=group, dry_run=True)
    assert [(i.offset, i.consumer_group, i.reason, i.sent) for i in listed] == [
        (0, "switchboard-sla", "failed", False), (1, "switchboard-notify", "failed", False),
        (2, "switchboard-sla", "invalid event", False),
    ]

    done = await replay(bootstrap, dlq, group=group, consumer_group="switchboard-sla", reason="failed")
    assert [(i.offset, i.to_topic, i.sent) for i in done] == [(0, topic, True)]
    records = await running_platform.read_topic(topic, until=lambda rs: len(rs) >= 1, timeout=10)
    assert [(r.key, r.value) for r in records] == [(b"t-1", b'{"id": "e1"}')]
    assert list(records[0].headers) == [*ORIGINAL_HEADERS, ("dlq-replayed-from", f"{dlq}/0/0".encode())], (
        "its own headers, byte for byte, without the dlq-* ones, and where it was replayed from"
    )

    # Progress is kept per replay group: nothing is replayed twice, newer dead letters are.
    await dead_letter(bootstrap, dlq, b'{"id": "e4"}', b"t-1", group="switchboard-sla", error="failed: again", offset=6)
    again = await replay(bootstrap, dlq, group=group)
    assert [i.offset for i in again] == [3]
    with pytest.raises(ValueError):
        await replay(bootstrap, topic, group=group)  # not a dead-letter topic

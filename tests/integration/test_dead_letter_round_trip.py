"""A record intake cannot process is parked whole, and a replay gives intake the very record again.

On the suite's platform; the record is a binary-mode `ticket.submit` without its `ce_source`
header, so it is dead-lettered on sight, and it carries headers a producer may well send: a
repeated name and a value that is not UTF-8.
"""

import json

import pytest

from shared import topics
from shared.dlq_replay import replay
from tests.support import unique

pytestmark = pytest.mark.integration

DLQ_HEADERS = {
    "dlq-error", "dlq-consumer-group", "dlq-attempts", "dlq-original-topic", "dlq-original-partition",
    "dlq-original-offset",
}


async def test_a_dead_letter_keeps_the_whole_record_and_a_replay_gives_it_back_as_it_came(running_platform):
    key = unique("dlq-round-trip").encode()
    value = json.dumps({"channel": "api", "customer": {"id": key.decode()}, "subject": "s", "body": "b"}).encode()
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", unique("e").encode()), ("ce_type", b"support.ticket.submit.v1"),
        ("content-type", b"application/json"), ("x-tenant", b"acme"), ("x-tenant", b"acme-eu"),
        ("x-signature", b"\xff\x00\x9c"),
    ]
    dlq = topics.dead_letter(topics.INBOUND)

    await running_platform.publish(topics.INBOUND, value, key=key, headers=headers)
    parked = await running_platform.read_topic(dlq, until=lambda records: any(r.key == key for r in records))

    [record] = [r for r in parked if r.key == key]
    assert record.value == value
    assert list(record.headers)[: len(headers)] == headers, "every header it came with, in order, byte for byte"
    added = dict(list(record.headers)[len(headers):])
    assert set(added) == DLQ_HEADERS
    assert added["dlq-error"] == b"invalid event: binary mode: missing required attribute header ce_source"
    assert (added["dlq-consumer-group"], added["dlq-original-topic"]) == (b"switchboard-intake", topics.INBOUND.encode())

    [replayed] = await replay(running_platform.bootstrap, dlq, group=unique("replay"), key=key.decode())
    back = await running_platform.read_topic(
        topics.INBOUND, until=lambda records: sum(r.key == key for r in records) == 2
    )

    [original, again] = [r for r in back if r.key == key]
    assert (again.key, again.value) == (original.key, original.value) == (key, value)
    marker = ("dlq-replayed-from", f"{dlq}/{replayed.partition}/{replayed.offset}".encode())
    assert list(again.headers) == [*headers, marker], "the record as it first came, marked where it was replayed from"

"""Replays a dead-letter topic: re-publishes its messages to the topics they came from.

    python -m shared.dlq_replay support.tickets.v1.dlq --dry-run     # list what would be replayed
    python -m shared.dlq_replay support.tickets.v1.dlq               # replay everything not replayed yet
    python -m shared.dlq_replay support.tickets.v1.dlq --consumer-group switchboard-routing --reason failed

Each message goes back as it first came: its value, its key (so an entity's order holds) and its
own headers, byte for byte, without the `dlq-*` headers parking added, to the topic in its
`dlq-original-topic` header, marked with one `dlq-replayed-from` header (`<dlq>/<partition>/<offset>`).
Replaying is safe: every consumer group of the topic receives it again, and those that had
processed the event drop it through their inbox (insights, which keeps none, folds it again, which
changes nothing); only the group that failed does the work.

Progress is kept as the committed offsets of the consumer group `--group` (default
`switchboard-dlq-replay`), so a second run replays only what was dead-lettered since. The replay
stops at the end offsets it found when it started, so a message that fails again is not replayed
in a loop. Nothing of the payloads is printed (they hold personal data): only positions, keys'
lengths, reasons and groups. `KAFKA_BOOTSTRAP_SERVERS` (or `--bootstrap-servers`) names Kafka.
"""

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.dead_letters import without_dead_letter_headers
from shared.kafka_admin import end_offsets


@dataclass(frozen=True)
class Replayed:
    partition: int
    offset: int
    to_topic: str
    consumer_group: str
    reason: str
    sent: bool


def _headers(record) -> dict[str, str]:
    return {name: (value or b"").decode(errors="replace") for name, value in record.headers or ()}


async def replay(
    bootstrap_servers: str,
    dead_letter_topic: str,
    *,
    group: str = "switchboard-dlq-replay",
    consumer_group: str | None = None,
    reason: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    idle_timeout_seconds: float = 5.0,
) -> list[Replayed]:
    """Replays the messages of `dead_letter_topic` that match the filters; returns what it did."""
    if not dead_letter_topic.endswith(".dlq"):
        raise ValueError(f"{dead_letter_topic} is not a dead-letter topic (<topic>.dlq)")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    await producer.start()
    done: list[Replayed] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(dead_letter_topic, p) for p in sorted(consumer.partitions_for_topic(dead_letter_topic) or ())]
        if not partitions:
            raise ValueError(f"topic {dead_letter_topic} does not exist")
        consumer.assign(partitions)  # no group membership, no rebalance: only committed offsets are shared
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)
        await probe.start()
        try:
            end = await end_offsets(probe, partitions)
        finally:
            await probe.stop()
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + idle_timeout_seconds
        while await _behind(consumer, partitions, end) and loop.time() < idle_until:
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    idle_until = loop.time() + idle_timeout_seconds
                    headers = _headers(record)
                    original = headers.get("dlq-original-topic") or dead_letter_topic.removesuffix(".dlq")
                    failed_group = headers.get("dlq-consumer-group", "")
                    error = headers.get("dlq-error", "")
                    wanted = (
                        (consumer_group is None or failed_group == consumer_group)
                        and (reason is None or error.startswith(reason))
                        and (key is None or (record.key or b"").decode(errors="replace") == key)
                    )
                    if wanted and not dry_run:
                        await producer.send_and_wait(
                            original,
                            record.value,
                            key=record.key,
                            headers=[
                                *without_dead_letter_headers(record.headers),
                                ("dlq-replayed-from", f"{record.topic}/{record.partition}/{record.offset}".encode()),
                            ],
                        )
                    if wanted:
                        done.append(
                            Replayed(record.partition, record.offset, original, failed_group,
                                     error.split(":", 1)[0], sent=not dry_run)
                        )
        if not dry_run:
            await consumer.commit({tp: await consumer.position(tp) for tp in partitions})
    finally:
        await producer.stop()
        await consumer.stop()
    return done


async def _behind(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], end: dict) -> bool:
    for tp in partitions:
        if await consumer.position(tp) < end[tp]:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", help="the dead-letter topic, e.g. support.tickets.v1.dlq")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--group", default="switchboard-dlq-replay", help="where the replay's progress is kept")
    parser.add_argument("--consumer-group", help="only messages this consumer group failed on")
    parser.add_argument("--reason", help="only messages whose dlq-error starts with this: invalid, rejected, failed")
    parser.add_argument("--key", help="only messages with this key (one ticket's or agent's)")
    parser.add_argument("--dry-run", action="store_true", help="list, publish nothing, keep no progress")
    args = parser.parse_args(argv)
    done = asyncio.run(
        replay(args.bootstrap_servers, args.topic, group=args.group, consumer_group=args.consumer_group,
               reason=args.reason, key=args.key, dry_run=args.dry_run)
    )
    for item in done:
        verb = "replayed" if item.sent else "would replay"
        print(f"{verb} {args.topic}[{item.partition}]@{item.offset} -> {item.to_topic} "
              f"(failed in {item.consumer_group or '?'}: {item.reason or '?'})")
    print(f"{len(done)} message(s) {'replayed' if not args.dry_run else 'to replay'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

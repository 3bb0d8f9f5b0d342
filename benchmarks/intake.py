"""Intake throughput and latency, against a running platform (`make run`, or `switchboard up` on other ports).

    .venv/bin/python -m benchmarks.intake [--intake-url http://127.0.0.1:8001]
        [--bootstrap 127.0.0.1:9092] [--api-key dev-key] [--tickets 500] [--concurrency 20] [--batch-size 200]

Two runs, each of `--tickets` tickets: through HTTP (`POST /v1/tickets`, `--concurrency` requests
in flight), and through `support.inbound.v1` (`ticket.submit` commands, published at once). For
each it prints tickets/s (from the first send to the last `ticket.created` seen on
`support.tickets.v1`) and the p50/p99 latency from sending to seeing `ticket.created`.

Then the baseline, on the same broker: as many commands of the same size, produced the same way to a
scratch topic with the inbound topic's partitions and consumed back by one consumer group polling
batches of `--batch-size` (intake's `CONSUMER_BATCH_SIZE`) and committing per batch: one raw aiokafka
hop, no handler, no database. The ratios of each path to it are what to read: figures on a shared
machine vary, ratios measured side by side much less.
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.kafka_admin import ensure_topics
from shared.settings import ServiceSettings

BODY = "I was charged twice for order {n}, please refund one payment."


class CreatedWatcher:
    """Reads `ticket.created` from the end of the topic and notes when each correlation id's event arrives."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(topics.TICKETS, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="latest")
        self.seen: dict[str, float] = {}
        self.by_ticket: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("type") == "support.ticket.created.v1":
                        self.seen.setdefault(event["correlationid"], now)
                        self.by_ticket.setdefault(event["subject"], now)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def wait_for(found, expected: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while found() < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Figures:
    per_second: float
    p50: float
    p99: float


def report(name: str, sent: dict[str, float], arrived: dict[str, float], *, unit: str = "tickets",
           seen: str = "ticket.created") -> Figures | None:
    latencies = sorted(arrived[key] - sent[key] for key in sent if key in arrived)
    if not latencies:
        print(f"{name}: no {seen} seen")
        return None
    span = max(arrived[key] for key in sent if key in arrived) - min(sent.values())
    figures = Figures(len(latencies) / span, statistics.median(latencies),
                      latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))])
    print(
        f"{name:>7}: {len(latencies)}/{len(sent)} {unit}, {figures.per_second:8.1f} {unit}/s, "
        f"latency to {seen} p50 {figures.p50 * 1000:7.1f} ms, p99 {figures.p99 * 1000:7.1f} ms"
    )
    return figures


def compare(name: str, figures: Figures | None, raw: Figures | None) -> None:
    if figures and raw:
        print(f"{name:>7} vs raw hop: {figures.per_second / raw.per_second:.3f}x the throughput, "
              f"{figures.p50 / raw.p50:.1f}x the p50 latency, {figures.p99 / raw.p99:.1f}x the p99")


async def through_http(args, watcher: CreatedWatcher) -> Figures | None:
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {args.api_key}"}
    # aiohttp, not httpx: httpx's AsyncClient spends about 8 ms of CPU per request under concurrency
    # (encode/httpx#3215), and would be measured instead of intake (see benchmarks/pipeline.py).
    async with aiohttp.ClientSession(base_url=args.intake_url, headers=headers, raise_for_status=True,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def one(n: int) -> None:
            async with gate:
                started = time.perf_counter()
                async with client.post("/v1/tickets", json={
                    "channel": "web", "customer": {"id": f"bench-{n % 50}"}, "subject": f"Bench {n}",
                    "body": BODY.format(n=n)}) as response:
                    sent[(await response.json())["id"]] = started

        await asyncio.gather(*(one(n) for n in range(args.tickets)))
    await wait_for(lambda: sum(key in watcher.by_ticket for key in sent), len(sent), args.timeout)
    return report("HTTP", sent, watcher.by_ticket)


def submit_commands(count: int) -> dict[str, bytes]:
    """`count` ticket.submit commands, by correlation id (also their Kafka key)."""
    run = uuid.uuid4().hex[:8]
    commands = {}
    for n in range(count):
        correlation = f"bench-{run}-{n}"
        commands[correlation] = json.dumps({
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "benchmark", "type": "support.ticket.submit.v1",
            "subject": correlation, "correlationid": correlation,
            "data": {"channel": "api", "customer": {"id": f"bench-{n % 50}"}, "subject": f"Bench {n}",
                     "body": BODY.format(n=n)},
        }).encode()
    return commands


async def produce(bootstrap: str, topic: str, messages: dict[str, bytes]) -> dict[str, float]:
    """Publishes every message at once (the producer batches them), keyed; returns when each was sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        futures = []
        for key, value in messages.items():
            sent[key] = time.perf_counter()
            futures.append(await producer.send(topic, value, key=key.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def through_kafka(args, watcher: CreatedWatcher) -> Figures | None:
    sent = await produce(args.bootstrap, topics.INBOUND, submit_commands(args.tickets))
    await wait_for(lambda: sum(key in watcher.seen for key in sent), len(sent), args.timeout)
    return report("inbound", sent, watcher.seen)


async def raw_hop(args) -> Figures | None:
    """The baseline: the inbound path's broker hop alone, on a scratch topic deleted afterwards."""
    scratch = f"bench.raw.{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=scratch, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await consumer.start()
    await admin.start()
    arrived: dict[str, float] = {}

    async def consume() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=args.batch_size)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    arrived.setdefault(record.key.decode(), now)
            if batches:
                await consumer.commit()

    try:
        await consumer.topics()  # metadata, for the inbound topic's partition count
        await ensure_topics(args.bootstrap, [scratch], len(consumer.partitions_for_topic(topics.INBOUND)))
        try:
            consumer.subscribe([scratch])
            while not consumer.assignment():  # joined the group: nothing sent waits for a rebalance
                await consumer.getmany(timeout_ms=100)
            task = asyncio.create_task(consume())
            sent = await produce(args.bootstrap, scratch, submit_commands(args.tickets))
            await wait_for(lambda: sum(key in arrived for key in sent), len(sent), args.timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await admin.delete_topics([scratch])
    finally:
        await consumer.stop()
        await admin.close()
    return report("raw hop", sent, arrived, unit="messages", seen="consumed")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake-url", default="http://127.0.0.1:8001")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--api-key", default="dev-key")
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=ServiceSettings.model_fields["consumer_batch_size"].default,
                        help="records per poll of the raw hop: intake's CONSUMER_BATCH_SIZE")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the last ticket.created")
    args = parser.parse_args()
    watcher = CreatedWatcher(args.bootstrap)
    await watcher.start()
    try:
        http = await through_http(args, watcher)
        inbound = await through_kafka(args, watcher)
    finally:
        await watcher.stop()
    raw = await raw_hop(args)
    compare("inbound", inbound, raw)
    compare("HTTP", http, raw)


if __name__ == "__main__":
    asyncio.run(main())

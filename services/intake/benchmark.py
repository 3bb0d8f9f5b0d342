"""Intake throughput and latency, against a running platform (`make run`, or `switchboard up` on other ports).

    .venv/bin/python -m services.intake.benchmark [--intake-url http://127.0.0.1:8001]
        [--bootstrap 127.0.0.1:9092] [--api-key dev-key] [--tickets 500] [--concurrency 20]

Two runs, each of `--tickets` tickets: through HTTP (`POST /v1/tickets`, `--concurrency` requests
in flight), and through `support.inbound.v1` (`ticket.submit` commands, published at once). For
each it prints tickets/s (from the first send to the last `ticket.created` seen on
`support.tickets.v1`) and the p50/p99 latency from sending to seeing `ticket.created`. Figures on
a shared machine vary; compare runs made side by side, not absolute numbers.
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import topics

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


def report(name: str, sent: dict[str, float], arrived: dict[str, float]) -> None:
    latencies = sorted(arrived[key] - sent[key] for key in sent if key in arrived)
    if not latencies:
        print(f"{name}: no ticket.created seen")
        return
    span = max(arrived[key] for key in sent if key in arrived) - min(sent.values())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{name:>7}: {len(latencies)}/{len(sent)} tickets, {len(latencies) / span:8.1f} tickets/s, "
        f"latency to ticket.created p50 {statistics.median(latencies) * 1000:7.1f} ms, p99 {p99 * 1000:7.1f} ms"
    )


async def through_http(args, watcher: CreatedWatcher) -> None:
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {args.api_key}"}
    async with httpx.AsyncClient(base_url=args.intake_url, headers=headers, timeout=60) as client:

        async def one(n: int) -> None:
            async with gate:
                started = time.perf_counter()
                response = await client.post("/v1/tickets", json={
                    "channel": "web", "customer": {"id": f"bench-{n % 50}"}, "subject": f"Bench {n}",
                    "body": BODY.format(n=n)})
                response.raise_for_status()
                sent[response.json()["id"]] = started

        await asyncio.gather(*(one(n) for n in range(args.tickets)))
    await wait_for(lambda: sum(key in watcher.by_ticket for key in sent), len(sent), args.timeout)
    report("HTTP", sent, watcher.by_ticket)


async def through_kafka(args, watcher: CreatedWatcher) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        run = uuid.uuid4().hex[:8]
        futures = []
        for n in range(args.tickets):
            correlation = f"bench-{run}-{n}"
            command = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "benchmark",
                       "type": "support.ticket.submit.v1", "subject": correlation, "correlationid": correlation,
                       "data": {"channel": "api", "customer": {"id": f"bench-{n % 50}"}, "subject": f"Bench {n}",
                                "body": BODY.format(n=n)}}
            sent[correlation] = time.perf_counter()
            futures.append(await producer.send(topics.INBOUND, json.dumps(command).encode(), key=correlation.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await wait_for(lambda: sum(key in watcher.seen for key in sent), len(sent), args.timeout)
    report("inbound", sent, watcher.seen)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake-url", default="http://127.0.0.1:8001")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--api-key", default="dev-key")
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the last ticket.created")
    args = parser.parse_args()
    watcher = CreatedWatcher(args.bootstrap)
    await watcher.start()
    try:
        await through_http(args, watcher)
        await through_kafka(args, watcher)
    finally:
        await watcher.stop()


if __name__ == "__main__":
    asyncio.run(main())

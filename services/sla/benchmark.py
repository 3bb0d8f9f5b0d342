"""SLA timer benchmark: prints figures and ratios measured side by side in one run. Never asserts.

    .venv/bin/python -m services.sla.benchmark [--clocks 1000000] [--spread-hours 8] [--mongodb-url URL]

What it measures, for N live clocks whose next firing is spread uniformly over `--spread-hours`:

1. Memory (tracemalloc) of what the scheduler keeps in memory:
   - sla's design: `NearHorizon` holding only the timers due within the horizon (60 s);
   - baseline "all in memory": the same heap holding all N timers;
   - baseline "asyncio call_at": one event-loop TimerHandle per clock (how in-memory schedulers,
     APScheduler's MemoryJobStore among them, keep every job in the process);
   - APScheduler 3.x with MemoryJobStore (and MongoDBJobStore when --mongodb-url is given), only
     if `apscheduler` is importable: it is not a dependency of this project.
2. Schedule and cancel operations per second of each in-memory structure.
3. Lateness of firings (p50/p99/max): 20,000 timers due over 10 s, fired by the NearHorizon loop
   vs asyncio call_at, on this process's event loop.
4. With --mongodb-url (e.g. the embedded nx-27017 or a replica set): writes `--mongo-clocks` clock
   documents, then times the window read (`next_fire_ms <= now + 60 s`) the scheduler does, and the
   conditional single-clock update a firing does.
5. With --embedded N: starts the whole platform on the embedded stack (ports 33001-33092, like
   `switchboard up`), with a policy of a 10 s first-reply target (warning at 50 %), publishes N
   TicketCreated events, and prints how late the N warnings and N breaches were: from the events
   (event time minus due time) and from sla's `switchboard_sla_timer_lateness_seconds` histogram.
"""

import argparse
import asyncio
import gc
import random
import shutil
import statistics
import time
import tracemalloc

from services.sla.timers import NearHorizon

HORIZON_MS = 60_000


def measure_memory(build) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def mib(size: int) -> str:
    return f"{size / 2**20:8.1f} MiB"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:12,.0f}/s"


def timers(n: int, spread_ms: int, now: int) -> list[tuple[int, str, int]]:
    rng = random.Random(42)
    return [(now + rng.randrange(spread_ms), f"TKT-{i:08d}:first_reply", 1) for i in range(n)]


def bench_memory(n: int, spread_ms: int) -> dict[str, int]:
    """Each structure builds its own clock-id strings, so their memory is counted where they are held."""
    now = int(time.time() * 1000)
    rng = random.Random(42)
    due = [now + rng.randrange(spread_ms) for _ in range(n)]
    results = {}

    def near():
        horizon = NearHorizon()
        horizon.load(
            ((fire, f"TKT-{i:08d}:first_reply", 1) for i, fire in enumerate(due) if fire <= now + HORIZON_MS),
            now + HORIZON_MS,
        )
        return horizon

    size, horizon = measure_memory(near)
    results["sla NearHorizon (60 s window)"] = size
    print(f"  sla NearHorizon, 60 s window: {len(horizon):>9,} timers held  {mib(size)}")
    del horizon

    def everything():
        horizon = NearHorizon()
        horizon.load(((fire, f"TKT-{i:08d}:first_reply", 1) for i, fire in enumerate(due)), now + spread_ms)
        return horizon

    size, horizon = measure_memory(everything)
    results["all N in one heap"] = size
    print(f"  baseline, all in one heap:    {len(horizon):>9,} timers held  {mib(size)}")
    del horizon

    loop = asyncio.new_event_loop()

    def call_at():
        base = loop.time()
        return [loop.call_at(base + (fire - now) / 1000, _noop, f"TKT-{i:08d}:first_reply") for i, fire in enumerate(due)]

    size, handles = measure_memory(call_at)
    results["asyncio call_at"] = size
    print(f"  baseline, asyncio call_at:    {len(handles):>9,} timers held  {mib(size)}")
    for handle in handles:
        handle.cancel()
    del handles
    loop.close()
    return results


def _noop(*_: object) -> None:
    pass


def bench_operations(n: int, spread_ms: int) -> None:
    now = int(time.time() * 1000)
    rows = timers(n, spread_ms, now)
    horizon = NearHorizon()
    horizon.load([], now + spread_ms)
    started = time.perf_counter()
    for fire, clock_id, version in rows:
        horizon.offer(clock_id, fire, version)
    scheduled = time.perf_counter() - started
    started = time.perf_counter()
    for _, clock_id, version in rows:
        horizon.offer(clock_id, None, version + 1)
    cancelled = time.perf_counter() - started
    print(f"  sla NearHorizon:   schedule {rate(n, scheduled)}   cancel {rate(n, cancelled)}")
    near_rate = n / scheduled

    loop = asyncio.new_event_loop()
    base = loop.time()
    started = time.perf_counter()
    handles = [loop.call_at(base + (fire - now) / 1000, _noop) for fire, _, _ in rows]
    scheduled = time.perf_counter() - started
    started = time.perf_counter()
    for handle in handles:
        handle.cancel()
    cancelled = time.perf_counter() - started
    loop.close()
    print(f"  asyncio call_at:   schedule {rate(n, scheduled)}   cancel {rate(n, cancelled)}")
    print(f"  ratio, schedule: NearHorizon / call_at = {near_rate / (n / scheduled):.2f}")
    _apscheduler_operations(min(n, 100_000), spread_ms)


def _apscheduler_operations(n: int, spread_ms: int) -> None:
    try:
        from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-not-found]
    except ImportError:
        print("  APScheduler: not installed (not a dependency of this project); skipped")
        return
    from datetime import UTC, datetime, timedelta

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    rng = random.Random(42)
    started = time.perf_counter()
    jobs = [
        scheduler.add_job(_noop, "date", run_date=now + timedelta(milliseconds=rng.randrange(spread_ms)))
        for _ in range(n)
    ]
    scheduled = time.perf_counter() - started
    started = time.perf_counter()
    for job in jobs:
        job.remove()
    cancelled = time.perf_counter() - started
    scheduler.shutdown(wait=False)
    print(f"  APScheduler memory store ({n:,}): schedule {rate(n, scheduled)}   cancel {rate(n, cancelled)}")


async def bench_lateness(count: int = 20_000, over_ms: int = 10_000) -> None:
    rng = random.Random(7)
    now = int(time.time() * 1000) + 500
    fire_at = [now + rng.randrange(over_ms) for _ in range(count)]

    horizon = NearHorizon()
    horizon.load(((fire, f"c{i}", 1) for i, fire in enumerate(fire_at)), now + over_ms)
    late: list[float] = []
    while len(late) < count:
        next_ms = horizon.next_ms()
        wait = (next_ms - time.time() * 1000) / 1000
        if wait > 0:
            await asyncio.sleep(wait)
        current = time.time() * 1000
        for fire, _, _ in horizon.pop_due(int(current), 1000):
            late.append(current - fire)
    _print_lateness("sla NearHorizon loop", late)

    loop = asyncio.get_running_loop()
    now = int(time.time() * 1000) + 500
    fire_at = [now + rng.randrange(over_ms) for _ in range(count)]
    late_call_at: list[float] = []
    done = asyncio.Event()

    def fired(due: int) -> None:
        late_call_at.append(time.time() * 1000 - due)
        if len(late_call_at) == count:
            done.set()

    offset = loop.time() - time.time()
    for due in fire_at:
        loop.call_at(due / 1000 + offset, fired, due)
    await done.wait()
    _print_lateness("asyncio call_at", late_call_at)


def _print_lateness(name: str, late_ms: list[float]) -> None:
    late_ms = sorted(max(value, 0.0) for value in late_ms)
    p99 = late_ms[int(len(late_ms) * 0.99) - 1]
    print(f"  {name:22s} p50 {statistics.median(late_ms):7.2f} ms   p99 {p99:7.2f} ms   max {late_ms[-1]:7.2f} ms")


async def bench_mongo(url: str, count: int) -> None:
    from pymongo import AsyncMongoClient

    from services.sla.repository import SlaRepository

    client = AsyncMongoClient(url)
    db = client["switchboard_sla_benchmark"]
    await db["clocks"].drop()
    repository = SlaRepository(db)
    await repository.ensure_indexes()
    now = int(time.time() * 1000)
    rng = random.Random(3)
    started = time.perf_counter()
    for first in range(0, count, 1000):
        await db["clocks"].insert_many(
            [
                {"_id": f"TKT-{i:08d}:first_reply", "ticket_id": f"TKT-{i:08d}", "version": 1, "stopped": False,
                 "next_fire_ms": now + rng.randrange(8 * 3600 * 1000)}
                for i in range(first, min(first + 1000, count))
            ]
        )
    written = time.perf_counter() - started
    print(f"  wrote {count:,} clock documents: {rate(count, written)}")
    started = time.perf_counter()
    window = await repository.due_before(now + HORIZON_MS, 50_000)
    read = time.perf_counter() - started
    print(f"  window read (next 60 s): {len(window):,} timers in {read * 1000:.1f} ms")
    started = time.perf_counter()
    updates = min(2000, count)
    for i in range(updates):
        await db["clocks"].find_one_and_update(
            {"_id": f"TKT-{i:08d}:first_reply", "version": 1}, {"$set": {"version": 2}, "$unset": {"next_fire_ms": 1}}
        )
    updated = time.perf_counter() - started
    print(f"  conditional clock updates (a firing's write, outside a transaction): {rate(updates, updated)}")
    await db["clocks"].drop()
    await client.close()


async def bench_embedded(count: int) -> None:
    import json
    import os
    import tempfile
    from datetime import datetime, timedelta
    from pathlib import Path

    import httpx
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from shared import topics
    from shared.clock import utc_now
    from shared.envelope import new_event
    from shared.events import Channel, Customer, Priority, TicketCreated
    from shared.launcher.platform import Platform, Ports

    data_dir = Path(tempfile.mkdtemp(prefix="sla-benchmark-"))
    policies = data_dir / "policies.yaml"
    policies.write_text("policies:\n  - name: bench\n    warnings: [0.5]\n    targets: {first_reply: 10s}\n")
    ignored = {"KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "SMTP_URL", "SWITCHBOARD_API_KEYS"}
    environ = {k: v for k, v in os.environ.items() if k not in ignored} | {"SLA_POLICIES_PATH": str(policies)}
    ports = Ports(kafka=33092, mongodb=33017, smtp=33025, intake=33001, routing=33002, sla=33003, notify=33004)
    platform = Platform(data_dir, ports, environ=environ)
    platform.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{ports.kafka}")
        await producer.start()
        for number in range(count):
            ticket = f"TKT-BENCH-{number:06d}"
            payload = TicketCreated(ticket_id=ticket, channel=Channel.API, customer=Customer(id="bench"), subject="bench",
                                    priority=Priority.NORMAL, required_skills=[], created_at=utc_now())
            await producer.send(topics.TICKETS, new_event(payload, source="bench", subject=ticket).to_json(), key=ticket.encode())
        await producer.stop()
        consumer = AIOKafkaConsumer(topics.SLA, bootstrap_servers=f"127.0.0.1:{ports.kafka}", group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        late: dict[str, list[float]] = {"warning": [], "breached": []}
        deadline = time.monotonic() + 120
        try:
            while len(late["breached"]) < count and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = json.loads(record.value)
                        kind = event["type"].split(".")[2]
                        if kind == "warning":
                            due = datetime.fromisoformat(event["data"]["due_at"]) - timedelta(seconds=event["data"]["target_seconds"] * 0.5)
                        elif kind == "breached":
                            due = datetime.fromisoformat(event["data"]["due_at"])
                        else:
                            continue
                        late[kind].append((datetime.fromisoformat(event["time"]) - due).total_seconds() * 1000)
        finally:
            await consumer.stop()
        for kind, values in late.items():
            if values:
                _print_lateness(f"{kind} ({len(values)})", values)
        metrics = httpx.get(f"http://127.0.0.1:{ports.sla}/metrics").text
        buckets = [line for line in metrics.splitlines() if line.startswith("switchboard_sla_timer_lateness_seconds_bucket")]
        print("  sla histogram (commit time - due time):")
        for line in buckets:
            print("   ", line)
    finally:
        platform.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clocks", type=int, default=1_000_000)
    parser.add_argument("--spread-hours", type=float, default=8.0)
    parser.add_argument("--mongodb-url")
    parser.add_argument("--mongo-clocks", type=int, default=100_000)
    parser.add_argument("--embedded", type=int, default=0, metavar="N", help="also time N breaches on the embedded stack")
    parser.add_argument("--skip-memory", action="store_true", help="only the --mongodb-url / --embedded parts")
    args = parser.parse_args()
    if args.embedded:
        print(f"lateness on the embedded stack, {args.embedded} tickets with a 10 s first-reply target:")
        asyncio.run(bench_embedded(args.embedded))
    if args.skip_memory:
        return
    spread_ms = int(args.spread_hours * 3600 * 1000)
    print(f"SLA timers, {args.clocks:,} live clocks due over {args.spread_hours:g} h")
    print("memory held by the scheduler:")
    memory = bench_memory(args.clocks, spread_ms)
    near = memory["sla NearHorizon (60 s window)"]
    for name, size in memory.items():
        if name != "sla NearHorizon (60 s window)":
            print(f"  ratio, {name} / sla: {size / max(near, 1):,.0f}x")
    print("operations:")
    bench_operations(args.clocks, spread_ms)
    print("lateness of firings (20,000 timers over 10 s):")
    asyncio.run(bench_lateness())
    if args.mongodb_url:
        print(f"durable clocks in MongoDB ({args.mongodb_url}):")
        asyncio.run(bench_mongo(args.mongodb_url, args.mongo_clocks))


if __name__ == "__main__":
    main()

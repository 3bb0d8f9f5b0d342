"""SLA timer benchmark: sla's scheduler and APScheduler 3.x doing the same job, side by side in one run. Never asserts.

    .venv/bin/python -m benchmarks.sla [--clocks 1000000] [--spread-hours 8] [--mongo-clocks 20000]
        [--mongodb-url URL] [--skip-memory] [--skip-mongo] [--embedded N]

The job: N live clocks, each with one timer (its next warning or breach) due at a random instant
over `--spread-hours`; schedule it, cancel it (the ticket was answered), fire it on time.
APScheduler does it with one `date` job per clock, id = the clock id, on a BackgroundScheduler:
its MongoDBJobStore uses synchronous pymongo, which needs the thread-based scheduler, and its
wake-up is an Event (AsyncIOScheduler would queue one loop callback per added job). Jobs get
`misfire_grace_time=None`: by default APScheduler drops a job more than 1 s late, and an SLA
breach must never be dropped.

In memory (left out with --skip-memory):
1. Memory (tracemalloc) held for the N clocks: sla's `NearHorizon` (only the timers due within the
   60 s horizon; the rest wait in MongoDB), the same heap holding all N, one asyncio `call_at`
   handle per clock, and APScheduler's MemoryJobStore. Tracing slows APScheduler's add_job about
   tenfold, so its memory is traced for `--apscheduler-memory-clocks` jobs and scaled linearly to N
   (one Job object per clock); the output says so.
2. Schedule and cancel operations per second, in random due order, of NearHorizon, `call_at` and
   APScheduler's MemoryJobStore (a sorted list: every add and remove shifts part of it, so its rate
   falls as N grows, which is why it is timed with all N unless `--apscheduler-clocks` says less).
3. Lateness of firings (p50/p99/max): 20,000 timers due over 10 s, fired by the NearHorizon loop,
   `call_at`, and APScheduler (MemoryJobStore, thread-pool executor), in this process.

Durable (left out with --skip-mongo), on --mongodb-url (a replica set: sla fires in transactions) or
else on an nx-27017 this run starts on a free port in a temporary directory and stops afterwards:
4. sla: `--mongo-clocks` clock documents as `SlaRepository` stores them (`next_fire_ms` indexed),
   scheduled in batches of SLA_SCHEDULER_BATCH_SIZE (200) and cancelled (fulfilled) with the batched
   conditional write the timers use; the same one at a time (`save_clock`) for 2,000 more; the 60 s
   window read.
   APScheduler's MongoDBJobStore: the same N jobs added and removed, one insert or delete per job
   (it has no batch API).
5. Lateness: `--mongo-lateness` timers due over 10 s, fired by sla's own `Timers` (lease, window
   read, a transaction per batch with each clock's conditional write and its outbox event), measured
   at commit, vs APScheduler with MongoDBJobStore, measured when the job function starts, before
   APScheduler deletes the job from the store (which favours APScheduler).

6. With --embedded N: starts the whole platform on the embedded stack (on free ports, like the
   integration tests), with a policy of a 10 s first-reply target (warning at 50 %), publishes N
   TicketCreated events, and prints how late the N warnings and N breaches were: decided (event
   time minus due time), on the topic (the Kafka record's timestamp, set when the outbox relay
   sent it, minus due time: what a consumer can see first), and sla's
   `switchboard_sla_timer_lateness_seconds` histogram (commit time minus due time).

Ratios read "how many times": memory and lateness, APScheduler (or the baseline) over sla; operations
per second, sla over APScheduler (below 1x, sla is slower).
"""

import argparse
import asyncio
import contextlib
import gc
import random
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC
from pathlib import Path

from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.mongodb import MongoDBJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.sla.domain import Clock, Metric, SlaRules, fulfil, start_clock
from services.sla.metrics import SlaMetrics
from services.sla.policy import parse_policies
from services.sla.repository import SlaTransaction, _clock_document
from services.sla.timers import NearHorizon, Timers, TimerSettings
from shared.clock import from_ms, now_ms
from shared.launcher.servers import mongo_wire_server
from shared.mongo import Lease, UnitOfWork
from shared.outbox import Outbox

HORIZON_MS = 60_000
LATENESS_TIMERS = 20_000
LATENESS_SPREAD_MS = 10_000
SINGLE_WRITES = 2_000
DATABASE = "switchboard_sla_benchmark"
BENCH_POLICIES = "policies:\n  - name: bench\n    targets: {first_reply: 1d}\n"
"""No warnings, so a clock's one timer is its breach; 1 d so every clock of an 8 h spread started in the past."""


# --- figures ----------------------------------------------------------------------------------


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


def per_second(value: float) -> str:
    return f"{value:12,.0f}/s"


def times(numerator: float, denominator: float) -> str:
    return f"{numerator / max(denominator, 1e-9):,.1f}x"


OPERATIONS = ("schedule", "cancel")
LATENESS = ("p50", "p99")


def _print_ratios(label: str, numerator: tuple[float, float], denominator: tuple[float, float], parts: tuple[str, str]) -> None:
    first, second = (f"{part} {times(a, b)}" for part, a, b in zip(parts, numerator, denominator, strict=True))
    print(f"  ratio, {label}: {first}, {second}")


def _print_operations(name: str, schedules: float, cancels: float) -> tuple[float, float]:
    """Prints and returns (schedules/s, cancels/s)."""
    print(f"  {name:42s} schedule {per_second(schedules)}   cancel {per_second(cancels)}")
    return schedules, cancels


def _print_lateness(name: str, late_ms: list[float]) -> tuple[float, float]:
    """Prints p50/p99/max and returns (p50, p99)."""
    late_ms = sorted(max(value, 0.0) for value in late_ms) or [float("nan")]
    p50, p99 = statistics.median(late_ms), late_ms[max(int(len(late_ms) * 0.99) - 1, 0)]
    print(f"  {name:42s} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   max {late_ms[-1]:8.2f} ms")
    return p50, p99


def timers(n: int, spread_ms: int, now: int) -> list[tuple[int, str, int]]:
    rng = random.Random(42)
    return [(now + rng.randrange(spread_ms), f"TKT-{i:08d}:first_reply", 1) for i in range(n)]


def due_soon(count: int, lead_ms: int) -> list[int]:
    """The lateness workload: `count` instants over 10 s, starting `lead_ms` from now."""
    rng = random.Random(7)
    start = int(time.time() * 1000) + lead_ms
    return [start + rng.randrange(LATENESS_SPREAD_MS) for _ in range(count)]


def lead_for(count: int, schedules_per_second: float) -> int:
    """Time to schedule `count` timers at the rate measured before (1.5 times, plus 1 s), so none is overdue at birth."""
    return 1000 + int(1500 * count / schedules_per_second)


def _noop(*_: object) -> None:
    pass


# --- APScheduler ------------------------------------------------------------------------------

_aps_late_ms: list[float] = []


def _aps_fired(fire_ms: int) -> None:
    """APScheduler's job in the lateness runs; module level, so MongoDBJobStore can store it by reference."""
    _aps_late_ms.append(time.time() * 1000 - fire_ms)


def apscheduler(jobstore: BaseJobStore) -> BackgroundScheduler:
    """Started paused: jobs go straight into the store and nothing fires until `resume()`."""
    scheduler = BackgroundScheduler(
        timezone=UTC, jobstores={"default": jobstore}, job_defaults={"misfire_grace_time": None}
    )
    scheduler.start(paused=True)
    return scheduler


def stop(scheduler: BackgroundScheduler) -> None:
    """The store first: shutting down wakes the scheduler once more, and a closed MongoDB client would log an error."""
    scheduler.remove_jobstore("default")
    scheduler.shutdown()


def aps_add(scheduler: BackgroundScheduler, clock_id: str, fire_ms: int, job: Callable = _noop) -> None:
    scheduler.add_job(job, "date", run_date=from_ms(fire_ms), args=(fire_ms,), id=clock_id, jobstore="default")


def aps_operations(scheduler: BackgroundScheduler, rows: list[tuple[int, str, int]]) -> tuple[float, float]:
    """Each clock's job added, then removed (the clock fulfilled): (schedules/s, cancels/s)."""
    started = time.perf_counter()
    for fire, clock_id, _ in rows:
        aps_add(scheduler, clock_id, fire)
    scheduled = time.perf_counter() - started
    started = time.perf_counter()
    for _, clock_id, _ in rows:
        scheduler.remove_job(clock_id, "default")
    cancelled = time.perf_counter() - started
    return len(rows) / scheduled, len(rows) / cancelled


def aps_lateness(scheduler: BackgroundScheduler, count: int, schedules_per_second: float) -> list[float]:
    """The lateness workload added while paused, then resumed; waits for every job to run (at most 2 min more)."""
    _aps_late_ms.clear()
    for number, fire in enumerate(due_soon(count, lead_for(count, schedules_per_second))):
        aps_add(scheduler, f"late-{number:06d}", fire, _aps_fired)
    scheduler.resume()
    deadline = time.monotonic() + LATENESS_SPREAD_MS / 1000 + 120
    while len(_aps_late_ms) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(_aps_late_ms) < count:
        print(f"  APScheduler ran only {len(_aps_late_ms):,} of {count:,} jobs in time")
    return list(_aps_late_ms)


# --- in memory --------------------------------------------------------------------------------


def bench_memory(n: int, spread_ms: int, aps_traced: int) -> None:
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
    print(f"  sla NearHorizon, 60 s window:  {len(horizon):>9,} timers held  {mib(size)}")
    near_size = size
    del horizon

    def everything():
        horizon = NearHorizon()
        horizon.load(((fire, f"TKT-{i:08d}:first_reply", 1) for i, fire in enumerate(due)), now + spread_ms)
        return horizon

    size, horizon = measure_memory(everything)
    results["all N in one heap"] = size
    print(f"  baseline, all in one heap:     {len(horizon):>9,} timers held  {mib(size)}")
    del horizon

    loop = asyncio.new_event_loop()

    def call_at():
        base = loop.time()
        return [loop.call_at(base + (fire - now) / 1000, _noop, f"TKT-{i:08d}:first_reply") for i, fire in enumerate(due)]

    size, handles = measure_memory(call_at)
    results["asyncio call_at"] = size
    print(f"  baseline, asyncio call_at:     {len(handles):>9,} timers held  {mib(size)}")
    for handle in handles:
        handle.cancel()
    del handles
    loop.close()

    traced = min(aps_traced, n)

    def memory_store():
        scheduler = apscheduler(MemoryJobStore())
        # In due order, so each add appends: the same list in the end, in seconds rather than minutes.
        for i, fire in enumerate(sorted(due[:traced])):
            aps_add(scheduler, f"TKT-{i:08d}:first_reply", fire)
        return scheduler

    size, scheduler = measure_memory(memory_store)
    stop(scheduler)
    results["APScheduler MemoryJobStore"] = size * n // traced
    scaled = "" if traced == n else f", traced for {traced:,} jobs and scaled x{n / traced:g} (linear: one Job per clock)"
    print(f"  APScheduler MemoryJobStore:    {n:>9,} jobs held    {mib(size * n // traced)}{scaled}")
    for name, size in results.items():
        print(f"  ratio, {name} / sla: {times(size, near_size)}")


def bench_operations(n: int, spread_ms: int, aps_count: int) -> float:
    """Returns APScheduler's schedules per second, for the lead of its lateness run."""
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
    near = _print_operations(f"sla NearHorizon ({n:,})", n / scheduled, n / cancelled)
    del horizon

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
    del handles
    call_at = _print_operations(f"asyncio call_at ({n:,})", n / scheduled, n / cancelled)

    aps_count = min(aps_count, n)
    scheduler = apscheduler(MemoryJobStore())
    try:
        aps = _print_operations(f"APScheduler MemoryJobStore ({aps_count:,})", *aps_operations(scheduler, rows[:aps_count]))
    finally:
        stop(scheduler)
    _print_ratios("sla / call_at", near, call_at, OPERATIONS)
    _print_ratios("sla / APScheduler MemoryJobStore", near, aps, OPERATIONS)
    return aps[0]


async def near_horizon_lateness(fire_at: list[int]) -> list[float]:
    """sla's firing loop without the database: sleep until the earliest timer, pop every due one."""
    horizon = NearHorizon()
    horizon.load(((fire, f"c{i}", 1) for i, fire in enumerate(fire_at)), max(fire_at))
    late: list[float] = []
    while len(late) < len(fire_at):
        wait = (horizon.next_ms() - time.time() * 1000) / 1000
        if wait > 0:
            await asyncio.sleep(wait)
        current = time.time() * 1000
        for fire, _, _ in horizon.pop_due(int(current), 1000):
            late.append(current - fire)
    return late


async def call_at_lateness(fire_at: list[int]) -> list[float]:
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()

    def fired(due: int) -> None:
        late.append(time.time() * 1000 - due)
        if len(late) == len(fire_at):
            done.set()

    offset = loop.time() - time.time()
    for due in fire_at:
        loop.call_at(due / 1000 + offset, fired, due)
    await done.wait()
    return late


def bench_lateness(aps_schedules_per_second: float) -> None:
    ours = _print_lateness("sla NearHorizon loop", asyncio.run(near_horizon_lateness(due_soon(LATENESS_TIMERS, 500))))
    call_at = _print_lateness("asyncio call_at", asyncio.run(call_at_lateness(due_soon(LATENESS_TIMERS, 500))))
    scheduler = apscheduler(MemoryJobStore())
    try:
        aps = _print_lateness("APScheduler MemoryJobStore", aps_lateness(scheduler, LATENESS_TIMERS, aps_schedules_per_second))
    finally:
        stop(scheduler)
    _print_ratios("call_at / sla", call_at, ours, LATENESS)
    _print_ratios("APScheduler MemoryJobStore / sla", aps, ours, LATENESS)


# --- durable ----------------------------------------------------------------------------------


@contextlib.contextmanager
def mongo_wire_server_or(url: str | None) -> Iterator[str]:
    """`url` when given; else an nx-27017 of this run's own (free port, temporary directory)."""
    if url:
        yield url
        return
    with mongo_wire_server() as own:
        yield own


def bench_clock(rules: SlaRules, ticket_id: str, fire_ms: int) -> Clock:
    """A running first-reply clock whose one timer, its breach, is due at `fire_ms`."""
    policy = rules.policies.by_name("bench")
    target = policy.targets[Metric.FIRST_REPLY]
    started_ms = fire_ms - target.target_seconds * 1000
    return start_clock(ticket_id, Metric.FIRST_REPLY, 1, policy, "normal", started_ms, target.calendar)


async def insert_clocks(db: AsyncDatabase, clocks: list[Clock], batch: int) -> list[Clock]:
    """New clocks written `batch` at a time, as `save_clock` stores them (version 1); returns them as stored."""
    stored = [replace(clock, version=1) for clock in clocks]
    for first in range(0, len(stored), batch):
        await db["clocks"].insert_many([_clock_document(clock) for clock in stored[first : first + batch]])
    return stored


class _Lateness(list):
    """Stands in for sla's lateness histogram and keeps every observation (in ms), for exact percentiles."""

    def observe(self, seconds: float) -> None:
        self.append(seconds * 1000)


async def timers_lateness(
    client: AsyncMongoClient,
    db: AsyncDatabase,
    rules: SlaRules,
    count: int,
    schedules_per_second: float,
    transaction_lock: Path | None,
) -> list[float]:
    """sla's own `Timers`, as the service runs them, on `count` clocks due over 10 s: commit time minus due time."""
    settings = TimerSettings()
    fire_at = due_soon(count, lead_for(count, schedules_per_second))
    await insert_clocks(db, [bench_clock(rules, f"LATE-{i:06d}", fire) for i, fire in enumerate(fire_at)], settings.batch_size)
    metrics = SlaMetrics(CollectorRegistry())
    metrics.timer_lateness = late = _Lateness()
    uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=transaction_lock, transaction_type=SlaTransaction)
    lease = Lease(uow, "sla-timers", "benchmark", settings.lease_seconds)
    running = asyncio.create_task(Timers(uow, rules, lease, metrics, "switchboard/sla-benchmark", settings).run())
    deadline = time.monotonic() + (max(fire_at) - time.time() * 1000) / 1000 + 120
    try:
        while len(late) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    if len(late) < count:
        print(f"  sla fired only {len(late):,} of {count:,} timers in time")
    return list(late)


async def sla_durable(
    url: str, rows: list[tuple[int, str, int]], lateness: int, transaction_lock: Path | None
) -> dict[str, object]:
    """sla's durable side: clock documents with the `next_fire_ms` index, written in the timers' batches.
    `transaction_lock` as the launcher gives one to the services on an embedded server, else None."""
    client = AsyncMongoClient(url)
    db = client[DATABASE]
    rules = SlaRules(parse_policies(BENCH_POLICIES))
    calendar = rules.calendar("calendar")
    batch = TimerSettings().batch_size
    count, single = len(rows), min(SINGLE_WRITES, len(rows))
    try:
        await client.drop_database(DATABASE)
        repository = SlaTransaction(db, None).clocks
        await repository.ensure_indexes()
        clocks = [bench_clock(rules, clock_id.split(":")[0], fire) for fire, clock_id, _ in rows]
        started = time.perf_counter()
        stored = await insert_clocks(db, clocks, batch)
        scheduled = time.perf_counter() - started

        now = now_ms()
        started = time.perf_counter()
        window = await repository.due_before(now + HORIZON_MS, TimerSettings().max_loaded)
        print(f"  sla window read (next 60 s of {count:,} clocks): {len(window):,} timers in "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")

        # One at a time, as a ticket event changes a clock: a conditional insert, then a conditional replace.
        started = time.perf_counter()
        saved = [await repository.save_clock(bench_clock(rules, f"TKT-S{i:07d}", now + HORIZON_MS)) for i in range(single)]
        single_scheduled = time.perf_counter() - started
        started = time.perf_counter()
        for clock in saved:
            await repository.save_clock(fulfil(clock, calendar, now))
        single_cancelled = time.perf_counter() - started

        started = time.perf_counter()
        for first in range(0, count, batch):
            if await repository.save_clocks([fulfil(clock, calendar, now) for clock in stored[first : first + batch]]) is None:
                raise RuntimeError("a benchmark clock was changed by someone else")
        cancelled = time.perf_counter() - started

        batched = _print_operations(f"sla, batches of {batch} ({count:,})", count / scheduled, count / cancelled)
        one_by_one = _print_operations(f"sla, one at a time ({single:,})", single / single_scheduled, single / single_cancelled)
        await db["clocks"].drop()
        await repository.ensure_indexes()
        late = await timers_lateness(client, db, rules, lateness, batched[0], transaction_lock)
    finally:
        await client.drop_database(DATABASE)
        await client.close()
    return {"batched": batched, "one at a time": one_by_one, "lateness": late}


def aps_durable(url: str, rows: list[tuple[int, str, int]], lateness: int) -> dict[str, object]:
    """APScheduler with MongoDBJobStore: one document (the pickled job) per clock, one round trip per change."""
    scheduler = apscheduler(MongoDBJobStore(database=DATABASE, collection="apscheduler_jobs", client=MongoClient(url)))
    try:
        operations = _print_operations(f"APScheduler MongoDBJobStore ({len(rows):,})", *aps_operations(scheduler, rows))
        late = aps_lateness(scheduler, lateness, operations[0])
    finally:
        stop(scheduler)  # closes its client too
    return {"operations": operations, "lateness": late}


def bench_durable(url: str | None, count: int, spread_ms: int, lateness: int) -> None:
    """APScheduler first: sla's part ends by dropping the benchmark database, APScheduler's collection with it."""
    with mongo_wire_server_or(url) as server, tempfile.TemporaryDirectory(prefix="sla-benchmark-") as directory:
        where = server if url else f"an nx-27017 started for this run ({server})"
        print(f"durable timers on {where}, {count:,} clocks due over {spread_ms / 3_600_000:g} h:")
        rows = timers(count, spread_ms, now_ms())
        aps = aps_durable(server, rows, lateness)
        ours = asyncio.run(sla_durable(server, rows, lateness, None if url else Path(directory) / "sla.lock"))
    _print_ratios("sla batched / APScheduler MongoDBJobStore", ours["batched"], aps["operations"], OPERATIONS)
    _print_ratios("sla one at a time / APScheduler MongoDBJobStore", ours["one at a time"], aps["operations"], OPERATIONS)
    print(f"lateness of durable firings ({lateness:,} timers over 10 s; sla at commit, APScheduler at job start):")
    sla_late = _print_lateness("sla Timers (transaction + outbox)", ours["lateness"])
    aps_late = _print_lateness("APScheduler MongoDBJobStore", aps["lateness"])
    _print_ratios("APScheduler MongoDBJobStore / sla", aps_late, sla_late, LATENESS)


# --- the whole platform -----------------------------------------------------------------------


async def bench_embedded(count: int) -> None:
    import json
    import tempfile
    from datetime import datetime, timedelta
    from pathlib import Path

    import httpx
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from shared import topics
    from shared.clock import utc_now
    from shared.envelope import new_event
    from shared.events import Channel, Customer, Priority, TicketCreated
    from shared.launcher.platform import Platform, Ports, embedded_environ

    data_dir = Path(tempfile.mkdtemp(prefix="sla-benchmark-"))
    policies = data_dir / "policies.yaml"
    policies.write_text("policies:\n  - name: bench\n    warnings: [0.5]\n    targets: {first_reply: 10s}\n")
    environ = embedded_environ(SLA_POLICIES_PATH=str(policies))
    ports = Ports.free()
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
        on_topic: dict[str, list[float]] = {"warning": [], "breached": []}
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
                        on_topic[kind].append(record.timestamp - due.timestamp() * 1000)
        finally:
            await consumer.stop()
        for kind, values in late.items():
            if values:
                _print_lateness(f"{kind} ({len(values)}), event time", values)
                _print_lateness(f"{kind} ({len(values)}), on the topic", on_topic[kind])
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
    parser.add_argument("--apscheduler-clocks", type=int, metavar="N",
                        help="time APScheduler's in-memory add/remove on N of the clocks (default: all)")
    parser.add_argument("--apscheduler-memory-clocks", type=int, default=100_000, metavar="N",
                        help="trace APScheduler's memory for N jobs and scale to --clocks (tracing is slow)")
    parser.add_argument("--mongodb-url", help="a replica set or Mongo-wire server for the durable part (default: start nx-27017)")
    parser.add_argument("--mongo-clocks", type=int, default=20_000)
    parser.add_argument("--mongo-lateness", type=int, default=2_000, metavar="N",
                        help="timers due over 10 s in the durable lateness run")
    parser.add_argument("--embedded", type=int, default=0, metavar="N", help="also time N breaches on the embedded stack")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the in-memory parts")
    parser.add_argument("--skip-mongo", action="store_true", help="leave out the durable (MongoDB) part")
    args = parser.parse_args()
    spread_ms = int(args.spread_hours * 3600 * 1000)
    if args.embedded:
        print(f"lateness on the embedded stack, {args.embedded} tickets with a 10 s first-reply target:")
        asyncio.run(bench_embedded(args.embedded))
    if not args.skip_memory:
        print(f"SLA timers in memory, {args.clocks:,} live clocks due over {args.spread_hours:g} h")
        print("memory held by the scheduler:")
        bench_memory(args.clocks, spread_ms, args.apscheduler_memory_clocks)
        print("operations:")
        aps_rate = bench_operations(args.clocks, spread_ms, args.apscheduler_clocks or args.clocks)
        print(f"lateness of firings ({LATENESS_TIMERS:,} timers over 10 s):")
        bench_lateness(aps_rate)
    if not args.skip_mongo:
        bench_durable(args.mongodb_url, args.mongo_clocks, spread_ms, args.mongo_lateness)


if __name__ == "__main__":
    main()

"""End-to-end pipeline benchmark: tickets/s and latency to created, assigned and acknowledged, beside its limits.

    .venv/bin/python -m benchmarks.pipeline [--seed 10000] [--burst 3000] [--http 1000] [--concurrency 50]
        [--timeout 900] [--json FILE]

It starts the whole platform on the embedded stack (broker, Mongo-wire server, SMTP sink and the
four services, as `make run` does) on free ports in a temporary directory, removed afterwards, with
the per-key rate limit off (it would cap the HTTP run, not the pipeline). Then:

1. Seeds `--seed` tickets through `support.inbound.v1` and waits until every one is assigned and
   acknowledged, so every service's database holds its share: the cost of a scan grows with what
   is stored. Agents whose capacity never binds are registered first, so seeded tickets are
   assigned as the burst's are.
2. The burst: `--burst` `ticket.submit` commands on `support.inbound.v1`, published at once.
3. The HTTP run: `--http` `POST /v1/tickets`, `--concurrency` in flight, sent with aiohttp: httpx's
   AsyncClient spent about 8 ms of CPU per request at 50 in flight (encode/httpx#3215), so the
   benchmark measured its own client at about 45 requests/s while intake answered each in 0.2 s.
   Each run waits for every ticket's `ticket.created`, its first-reply `sla.clock_started` (the
   acknowledgement waits for it, to tell the customer when to expect a reply: notify's rules.yaml),
   `ticket.assigned` and acknowledgement `notification.sent` (read from the topics; a ticket is
   known by its own customer id), or gives up after `--timeout` seconds and reports what arrived,
   marked INCOMPLETE.
4. Idle: each process's CPU over 30 s, once 30 s have passed since everything was done: the services'
   pollers take about that long to back off from the load, which is not what idle costs.
   That is in 0.33 ms/s steps (the kernel counts CPU in 10 ms ticks); `benchmarks.idle` measures a
   freshly started platform over a minute, beside a floor.
5. The limits, in the same run: a raw aiokafka relay of three hops on the same broker (no handler,
   no database; consumer groups committing per batch of CONSUMER_BATCH_SIZE, as the services do),
   and a fresh nx-27017's commit rate with 100 tickets (state plus outbox document) per
   transaction and with one ticket per transaction.

It prints throughput (tickets reaching the milestone over the time from the first submission to
the last arrival) and p50/p99 latency from submission, each process's CPU-ms per ticket (user
plus system, from /proc, for the process and its children), each service's MongoDB commands per
ticket (round trips, from its `switchboard_mongodb_commands_total`), the ratios to the limits, and the
targets of issue 12 beside the figures. This machine is shared: read the ratios, measured side by
side, rather than the absolute figures.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families
from pymongo import ASCENDING, AsyncMongoClient

from shared import topics
from shared.kafka_admin import ensure_topics
from shared.launcher.platform import DATABASE_SERVERS, SERVICES, Platform, Ports, embedded_environ
from shared.launcher.servers import mongo_wire_server
from shared.settings import ServiceSettings

CREATED = "support.ticket.created.v1"
ASSIGNED = "support.ticket.assigned.v1"
NOTIFICATION_SENT = "support.notification.sent.v1"
CLOCK_STARTED = "support.sla.clock_started.v1"
FIRST_REPLY = "first_reply"
"""The SLA metric whose clock the acknowledgement waits for (services/notify/rules.yaml)."""
ACKNOWLEDGEMENT = "acknowledgement"
"""The kind of notify's rule that acknowledges a new ticket to its customer (services/notify/rules.yaml)."""
MILESTONES = ("created", "clock started", "assigned", "acknowledged")

AGENT_CAPACITY = 1000
"""Routing's largest capacity per agent; enough agents are registered that it never binds."""
MIN_AGENTS = 50
SKILL = "billing"
BATCH_SIZE = ServiceSettings.model_fields["consumer_batch_size"].default
TICKETS_PER_TRANSACTION = 100
SINGLE_TRANSACTIONS = 500
SETTLE_SECONDS = 30.0
IDLE_SECONDS = 30.0
PROGRESS_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Target:
    """What issue 12 asks of a path: at least so many tickets/s, a p99 under so many seconds."""

    min_per_second: float | None = None
    max_p99: float | None = None

    def describe(self) -> str:
        parts = [f">= {self.min_per_second:g}/s"] if self.min_per_second else []
        parts += [f"p99 < {self.max_p99:g} s"] if self.max_p99 else []
        return ", ".join(parts)


TARGETS = {
    ("inbound", "assigned"): Target(min_per_second=200),
    ("inbound", "acknowledged"): Target(min_per_second=150, max_p99=30),
    ("HTTP", "answer"): Target(max_p99=1),
    ("HTTP", "assigned"): Target(min_per_second=150),
}
IDLE_TARGET_MS_PER_SECOND = 5.0


@dataclass(frozen=True)
class Stage:
    """How many of the submitted tickets reached a milestone, how fast, and how late."""

    done: int
    expected: int
    per_second: float | None
    p50: float | None
    p99: float | None

    @property
    def complete(self) -> bool:
        return self.done == self.expected

    def meets(self, target: Target) -> bool:
        return (
            self.complete
            and (target.min_per_second is None or (self.per_second or 0) >= target.min_per_second)
            and (target.max_p99 is None or (self.p99 is not None and self.p99 < target.max_p99))
        )

    def verdict(self, target: Target) -> str:
        """A run of no tickets (`--http 0`) neither meets nor misses a target: it did not measure it."""
        if not self.expected:
            return "not run"
        return "met" if self.meets(target) else "MISSED"


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value that at least `share` percent of `values` do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share / 100 * len(ordered)) - 1)]


def stage(sent: dict[str, float], arrived: dict[str, float]) -> Stage:
    """Figures of the tickets in `sent` (submission times) that have an arrival time."""
    reached = [key for key in sent if key in arrived]
    if not reached:
        return Stage(0, len(sent), None, None, None)
    latencies = [arrived[key] - sent[key] for key in reached]
    span = max(arrived[key] for key in reached) - min(sent.values())
    return Stage(len(reached), len(sent), len(reached) / span, percentile(latencies, 50), percentile(latencies, 99))


# --- the platform's events ------------------------------------------------------------------------


class Milestones:
    """Reads the pipeline's topics from the start and notes when each ticket reached each milestone."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topics.TICKETS, topics.ROUTING, topics.SLA, topics.NOTIFICATIONS,
            bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        )
        self.ticket_of: dict[str, str] = {}
        """Customer id to ticket id: every benchmark ticket has a customer of its own."""
        self.reached: dict[str, dict[str, float]] = {milestone: {} for milestone in MILESTONES}
        """Milestone to ticket id to arrival time."""
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    self._note(record.value, now)

    def _note(self, value: bytes, now: float) -> None:
        if not any(kind in value for kind in (b"ticket.created", b"ticket.assigned", b"clock_started", b"notification.sent")):
            return  # most events are none of these: skip parsing them
        event = json.loads(value)
        data = event["data"]
        if event["type"] == CREATED:
            self.ticket_of.setdefault(data["customer"]["id"], data["ticket_id"])
            self.reached["created"].setdefault(data["ticket_id"], now)
        elif event["type"] == CLOCK_STARTED and data["metric"] == FIRST_REPLY:
            self.reached["clock started"].setdefault(data["ticket_id"], now)
        elif event["type"] == ASSIGNED:
            self.reached["assigned"].setdefault(data["ticket_id"], now)
        elif event["type"] == NOTIFICATION_SENT and data["kind"] == ACKNOWLEDGEMENT:
            self.reached["acknowledged"].setdefault(data["ticket_id"], now)

    def arrivals(self, milestone: str, customers: Iterable[str]) -> dict[str, float]:
        """When each customer's ticket reached `milestone`, by customer id."""
        reached = self.reached[milestone]
        return {
            customer: reached[ticket]
            for customer in customers
            if (ticket := self.ticket_of.get(customer)) is not None and ticket in reached
        }

    async def wait(self, name: str, customers: Sequence[str], timeout: float) -> bool:
        """Until every customer's ticket reached every milestone, or `timeout`; prints progress meanwhile."""
        started = time.perf_counter()
        next_progress = started + PROGRESS_SECONDS
        while True:
            counts = {milestone: len(self.arrivals(milestone, customers)) for milestone in MILESTONES}
            now = time.perf_counter()
            if all(count == len(customers) for count in counts.values()):
                return True
            if now - started >= timeout or now >= next_progress:
                progress = ", ".join(f"{milestone} {count}/{len(customers)}" for milestone, count in counts.items())
                if now - started >= timeout:
                    print(f"  {name}: gave up after {timeout:.0f} s with {progress}: INCOMPLETE", flush=True)
                    return False
                print(f"  {name}: {now - started:5.0f} s, {progress}", flush=True)
                next_progress = now + PROGRESS_SECONDS
            await asyncio.sleep(0.5)


def customers(kind: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{kind}-{run}-{n}" for n in range(count)]


def submission(customer: str, channel: str) -> dict:
    """A ticket that needs the agents' skill, from a customer with an email address (so it is acknowledged)."""
    return {
        "channel": channel,
        "customer": {"id": customer, "email": f"{customer}@example.com", "name": "Ann Lee"},
        "subject": f"Charged twice for order {customer}",
        "body": "I was charged twice for my order, please refund one payment.",
        "required_skills": [SKILL],
    }


def submit_command(customer: str) -> bytes:
    """A `ticket.submit` CloudEvent, as an outside system publishes it on `support.inbound.v1`."""
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "benchmark", "type": "support.ticket.submit.v1",
        "subject": customer, "correlationid": customer, "datacontenttype": "application/json",
        "data": submission(customer, "api"),
    }).encode()


async def submit_inbound(bootstrap: str, customer_ids: Sequence[str]) -> dict[str, float]:
    """Publishes one command per customer at once (the producer batches them); returns when each was sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        deliveries = []
        for customer in customer_ids:
            sent[customer] = time.perf_counter()
            deliveries.append(await producer.send(topics.INBOUND, submit_command(customer), key=customer.encode()))
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    return sent


async def submit_http(
    client: aiohttp.ClientSession, customer_ids: Sequence[str], concurrency: int
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """POSTs one ticket per customer, `concurrency` in flight: when each was sent and answered, and failures by kind."""
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(customer: str) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                async with client.post("/v1/tickets", json=submission(customer, "web")) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
                return
            if response.status != 201:
                failures[f"HTTP {response.status}"] = failures.get(f"HTTP {response.status}", 0) + 1
                return
            sent[customer] = started
            answered[customer] = time.perf_counter()

    await asyncio.gather(*(one(customer) for customer in customer_ids))
    return sent, answered, failures


async def register_agents(client: httpx.AsyncClient, tickets: int) -> int:
    count = max(MIN_AGENTS, math.ceil(tickets / AGENT_CAPACITY))
    for n in range(count):
        profile = {"name": f"Agent {n}", "skills": {SKILL: 3}, "capacity": AGENT_CAPACITY, "status": "available"}
        response = await client.put(f"/v1/agents/bench-agent-{n}", json=profile)
        response.raise_for_status()
    return count


# --- CPU -----------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU so far of a process and its live descendants; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat
    return own + sum(cpu_seconds(child) for child in children)


def cpu_snapshot(platform: Platform) -> dict[str, float]:
    """CPU seconds so far of each process of the platform, and of this benchmark."""
    own = os.times()
    return {name: cpu_seconds(process.pid) for name, process in platform.processes.items()} | {
        "benchmark": own.user + own.system}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


# --- the runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One submission path's figures: per milestone (and the HTTP answer), and CPU per process."""

    stages: dict[str, Stage]
    cpu_ms_per_ticket: dict[str, float]
    mongodb_commands_per_ticket: dict[str, float]
    failures: dict[str, int]
    seconds: float


async def mongodb_commands(platform: Platform) -> dict[str, float]:
    """MongoDB commands each service has sent so far, from its `switchboard_mongodb_commands_total`."""
    counts = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for service in SERVICES:
            text = (await client.get(platform.url(service) + "/metrics")).text
            counts[service] = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "switchboard_mongodb_commands"
                for sample in family.samples
                if sample.name.endswith("_total")
            )
    return counts


def run_figures(
    milestones: Milestones, sent: dict[str, float], used: dict[str, dict[str, float]], tickets: int, seconds: float,
    *, answered: dict[str, float] | None = None, failures: dict[str, int] | None = None,
) -> Run:
    """`used`: CPU seconds (`cpu`) and MongoDB commands (`commands`) per process over the run."""
    stages = {"answer": stage(sent, answered)} if answered is not None else {}
    stages |= {milestone: stage(sent, milestones.arrivals(milestone, sent)) for milestone in MILESTONES}
    per_ticket = max(tickets, 1)
    return Run(
        stages,
        {name: seconds_used * 1000 / per_ticket for name, seconds_used in used["cpu"].items()},
        {name: commands / per_ticket for name, commands in used["commands"].items()},
        failures or {},
        seconds,
    )


async def usage_snapshot(platform: Platform) -> dict[str, dict[str, float]]:
    return {"cpu": cpu_snapshot(platform), "commands": await mongodb_commands(platform)}


async def usage_since(platform: Platform, before: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    after = await usage_snapshot(platform)
    return {kind: cpu_used(before[kind], after[kind]) for kind in before}


async def inbound_run(platform: Platform, milestones: Milestones, count: int, timeout: float) -> Run:
    customer_ids = customers("burst", count)
    before, started = await usage_snapshot(platform), time.perf_counter()
    sent = await submit_inbound(f"127.0.0.1:{platform.ports.kafka}", customer_ids)
    await milestones.wait("inbound burst", customer_ids, timeout)
    used = await usage_since(platform, before)
    return run_figures(milestones, sent, used, count, time.perf_counter() - started)


async def http_run(
    platform: Platform, milestones: Milestones, intake: aiohttp.ClientSession, count: int, concurrency: int,
    timeout: float
) -> Run:
    customer_ids = customers("http", count)
    before, started = await usage_snapshot(platform), time.perf_counter()
    sent, answered, failures = await submit_http(intake, customer_ids, concurrency)
    await milestones.wait("HTTP run", list(sent), max(0.0, timeout - (time.perf_counter() - started)))
    used = await usage_since(platform, before)
    return run_figures(milestones, sent, used, count, time.perf_counter() - started, answered=answered,
                       failures=failures)


async def idle_cpu(platform: Platform) -> dict[str, float]:
    """CPU ms per second of each process over IDLE_SECONDS, once the last work has had time to settle."""
    await asyncio.sleep(SETTLE_SECONDS)
    before = cpu_snapshot(platform)
    await asyncio.sleep(IDLE_SECONDS)
    return {name: used * 1000 / IDLE_SECONDS for name, used in cpu_used(before, cpu_snapshot(platform)).items()}


# --- the limits ----------------------------------------------------------------------------------


async def raw_relay(bootstrap: str, count: int, timeout: float) -> Stage:
    """`count` messages produced to topic A, relayed A to B and B to C by two consumer groups, read from C."""
    run = uuid.uuid4().hex[:8]
    hops = [f"bench.relay.{run}.{hop}" for hop in "abc"]
    metadata = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await metadata.start()
    try:
        await metadata.topics()
        partitions = len(metadata.partitions_for_topic(topics.INBOUND))
    finally:
        await metadata.stop()
    await ensure_topics(bootstrap, hops, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    groups = [
        AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-relay-{run}-{n}",
                         enable_auto_commit=False, auto_offset_reset="earliest")
        for n, topic in enumerate(hops)
    ]
    arrived: dict[str, float] = {}
    stopping = asyncio.Event()

    async def relay(consumer: AIOKafkaConsumer, onward: str | None) -> None:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH_SIZE)
            now = time.perf_counter()
            records = [record for batch in batches.values() for record in batch]
            if onward:
                await asyncio.gather(*[await producer.send(onward, r.value, key=r.key) for r in records])
            else:
                for record in records:
                    arrived.setdefault(record.key.decode(), now)
            if records:
                await consumer.commit()

    relays: list[asyncio.Task] = []
    try:
        await producer.start()
        for consumer in groups:
            await consumer.start()
            while not consumer.assignment():  # joined: nothing sent waits for a rebalance
                await consumer.getmany(timeout_ms=100)
        onwards = [*hops[1:], None]
        relays = [asyncio.create_task(relay(consumer, onward)) for consumer, onward in zip(groups, onwards)]
        sent: dict[str, float] = {}
        deliveries = []
        for n in range(count):
            key = f"relay-{n}"
            sent[key] = time.perf_counter()
            deliveries.append(await producer.send(hops[0], submit_command(key), key=key.encode()))
        await asyncio.gather(*deliveries)
        deadline = time.perf_counter() + timeout
        while len(arrived) < count and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        return stage(sent, arrived)
    finally:
        # Relays finish their round rather than being cancelled: a cancelled `commit()` leaves aiokafka's own
        # commit task running, to fail unretrieved once its consumer stops.
        stopping.set()
        await asyncio.gather(*relays, return_exceptions=True)
        for consumer in groups:
            await consumer.stop()
        await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(hops)
        finally:
            await admin.close()


def ticket_documents(first: int, count: int) -> tuple[list[dict], list[dict]]:
    """Tickets' state and their `ticket.created` outbox documents, shaped as intake stores them."""
    tickets, outbox = [], []
    for n in range(first, first + count):
        ticket_id = f"T-{uuid.uuid4().hex[:12]}"
        event = submit_command(f"limit-{n}").decode()
        tickets.append({"_id": ticket_id, "status": "new", "priority": "high", "version": 1,
                        **submission(f"limit-{n}", "api"), "created_ms": int(time.time() * 1000)})
        outbox.append({"_id": str(uuid.uuid4()), "topic": topics.TICKETS, "key": ticket_id, "type": CREATED,
                       "correlation_id": ticket_id, "value": event, "created_ns": time.time_ns(),
                       "created_ms": int(time.time() * 1000), "sent": False})
    return tickets, outbox


async def committed_per_second(client: AsyncMongoClient, count: int, per_transaction: int) -> float:
    """Tickets per second committed with their outbox documents, `per_transaction` tickets in each transaction."""
    db = client[f"bench_{per_transaction}"]
    await db["outbox"].create_index([("sent", ASCENDING), ("created_ns", ASCENDING)])
    batches = [ticket_documents(first, per_transaction) for first in range(0, count, per_transaction)]
    started = time.perf_counter()
    for tickets, outbox in batches:
        async with client.start_session() as session:
            async with await session.start_transaction():
                await db["tickets"].insert_many(tickets, session=session)
                await db["outbox"].insert_many(outbox, session=session)
    return count / (time.perf_counter() - started)


async def mongo_wire_rates(count: int) -> tuple[float, float]:
    """A fresh nx-27017's batched (tickets/s) and single-ticket (transactions/s) commit rates."""
    with mongo_wire_server() as url:
        client = AsyncMongoClient(url)
        try:
            batched = await committed_per_second(client, max(count, TICKETS_PER_TRANSACTION), TICKETS_PER_TRANSACTION)
            single = await committed_per_second(client, min(count, SINGLE_TRANSACTIONS), 1)
        finally:
            await client.close()
    return batched, single


# --- the whole run -------------------------------------------------------------------------------


async def benchmark(platform: Platform, args: argparse.Namespace) -> dict:
    bootstrap = f"127.0.0.1:{platform.ports.kafka}"
    milestones = Milestones(bootstrap)
    await milestones.start()
    headers = {"Authorization": f"Bearer {platform.api_key}"}
    try:
        async with (
            httpx.AsyncClient(base_url=platform.url("routing"), headers=headers, timeout=30) as routing,
            aiohttp.ClientSession(base_url=platform.url("intake"), headers=headers,
                                  connector=aiohttp.TCPConnector(limit=args.concurrency),
                                  timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)) as intake,
        ):
            agents = await register_agents(routing, args.seed + args.burst + args.http)
            print(f"{agents} agents of capacity {AGENT_CAPACITY} with the skill {SKILL!r}", flush=True)

            seeds = customers("seed", args.seed)
            started = time.perf_counter()
            await submit_inbound(bootstrap, seeds)
            seeded = await milestones.wait("seeding", seeds, args.timeout)
            seed_seconds = time.perf_counter() - started
            print(f"seeded {args.seed} tickets in {seed_seconds:.1f} s{'' if seeded else ' (INCOMPLETE)'}",
                  flush=True)

            print(f"inbound burst of {args.burst} ticket.submit commands", flush=True)
            inbound = await inbound_run(platform, milestones, args.burst, args.timeout)
            print(f"HTTP run of {args.http} tickets, {args.concurrency} in flight", flush=True)
            http = await http_run(platform, milestones, intake, args.http, args.concurrency, args.timeout)
        print(f"idle CPU over {IDLE_SECONDS:.0f} s", flush=True)
        idle = await idle_cpu(platform)
    finally:
        await milestones.stop()
    print(f"raw relay of three hops, {args.burst} messages", flush=True)
    relay = await raw_relay(bootstrap, args.burst, args.timeout)
    print("nx-27017 commit rates", flush=True)
    batched, single = await mongo_wire_rates(args.burst)
    return {
        "config": {"seed": args.seed, "burst": args.burst, "http": args.http, "concurrency": args.concurrency,
                   "timeout_seconds": args.timeout, "agents": agents, "cpus": os.cpu_count()},
        "seeding": {"tickets": args.seed, "seconds": seed_seconds, "complete": seeded},
        "inbound": asdict(inbound),
        "http": asdict(http),
        "idle_cpu_ms_per_second": idle,
        "limits": {"raw_relay": asdict(relay), "mongo_batched_tickets_per_second": batched,
                   "mongo_single_transactions_per_second": single},
    }


# --- the report ----------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 1 else f"{value:.1f}"


def rate_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.4f}x" if numerator and denominator else "-"


def report(figures: dict) -> str:
    config = figures["config"]
    seeding = figures["seeding"]
    lines = [
        f"pipeline benchmark: seed {config['seed']}, burst {config['burst']}, HTTP {config['http']} "
        f"({config['concurrency']} in flight), {config['agents']} agents, {config['cpus']} CPUs",
        f"seeding: {seeding['tickets']} tickets to acknowledged in {seeding['seconds']:.1f} s"
        + ("" if seeding["complete"] else " INCOMPLETE"),
        "",
        f"{'path':<8} {'to':<13} {'done':>11} {'tickets/s':>10} {'p50 s':>8} {'p99 s':>8}   target",
    ]
    for path, key in (("inbound", "inbound"), ("HTTP", "http")):
        for milestone, figure in figures[key]["stages"].items():
            target = TARGETS.get((path, milestone))
            verdict = ""
            if target:
                verdict = f"{target.describe()}: {Stage(**figure).verdict(target)}"
            done = f"{figure['done']}/{figure['expected']}"
            lines.append(
                f"{path:<8} {milestone:<13} {done:>11} {rate_text(figure['per_second']):>10} "
                f"{seconds_text(figure['p50']):>8} {seconds_text(figure['p99']):>8}   {verdict}"
                + ("" if figure["done"] == figure["expected"] else "  INCOMPLETE")
            )
        if failures := figures[key]["failures"]:
            lines.append(f"{path:<8} failed requests: {failures}")

    limits = figures["limits"]
    relay = limits["raw_relay"]
    lines += [
        "",
        "limits, same run:",
        f"  raw aiokafka relay, three hops: {rate_text(relay['per_second'])} messages/s, p50 "
        f"{seconds_text(relay['p50'])} s, p99 {seconds_text(relay['p99'])} s ({relay['done']}/{relay['expected']})",
        f"  nx-27017, {TICKETS_PER_TRANSACTION} tickets (state + outbox) per transaction: "
        f"{rate_text(limits['mongo_batched_tickets_per_second'])} tickets/s",
        f"  nx-27017, one ticket per transaction: {rate_text(limits['mongo_single_transactions_per_second'])} "
        "transactions/s",
        "",
        "ratios:",
    ]
    inbound, http = figures["inbound"]["stages"], figures["http"]["stages"]
    batched, single = limits["mongo_batched_tickets_per_second"], limits["mongo_single_transactions_per_second"]
    for name, numerator, denominator in (
        ("inbound to assigned / raw relay", inbound["assigned"]["per_second"], relay["per_second"]),
        ("inbound to acknowledged / raw relay", inbound["acknowledged"]["per_second"], relay["per_second"]),
        ("HTTP to assigned / raw relay", http["assigned"]["per_second"], relay["per_second"]),
        ("inbound to assigned / nx-27017 batched", inbound["assigned"]["per_second"], batched),
        ("inbound to acknowledged / nx-27017 batched", inbound["acknowledged"]["per_second"], batched),
        ("HTTP answers / nx-27017 single transactions", http["answer"]["per_second"], single),
    ):
        lines.append(f"  {name}: {ratio(numerator, denominator)}")
    lines += [
        "",
        f"CPU {'process':<14} {'burst ms/ticket':>16} {'HTTP ms/ticket':>15} {'idle ms/s':>10}   "
        f"idle target (services): < {IDLE_TARGET_MS_PER_SECOND:g} ms/s (beside a floor: benchmarks.idle)",
    ]
    burst_cpu = figures["inbound"]["cpu_ms_per_ticket"]
    http_cpu = figures["http"]["cpu_ms_per_ticket"]
    idle = figures["idle_cpu_ms_per_second"]
    platform_processes = [name for name in burst_cpu if name != "benchmark"]
    for name in [*platform_processes, "benchmark"]:
        verdict = ("met" if idle[name] < IDLE_TARGET_MS_PER_SECOND else "MISSED") if name in SERVICES else ""
        lines.append(f"    {name:<14} {burst_cpu[name]:>16.1f} {http_cpu[name]:>15.1f} {idle[name]:>10.1f}   {verdict}")
    burst_total = sum(burst_cpu[name] for name in platform_processes)
    lines.append(f"    {'platform':<14} {burst_total:>16.1f} {sum(http_cpu[n] for n in platform_processes):>15.1f} "
                 f"{sum(idle[n] for n in platform_processes):>10.1f}")
    database_servers = [name for name in DATABASE_SERVERS.values() if name in burst_cpu]
    if burst_total and database_servers:
        lines.append(f"  nx-27017's share of the platform's CPU over the burst (its {len(database_servers)} servers): "
                     f"{sum(burst_cpu[name] for name in database_servers) / burst_total:.0%}")
    burst_commands = figures["inbound"]["mongodb_commands_per_ticket"]
    http_commands = figures["http"]["mongodb_commands_per_ticket"]
    lines += ["", f"MongoDB commands (round trips) {'burst per ticket':>16} {'HTTP per ticket':>15}"]
    for name in burst_commands:
        lines.append(f"    {name:<27} {burst_commands[name]:>16.1f} {http_commands.get(name, 0):>15.1f}")
    lines.append(f"    {'platform':<27} {sum(burst_commands.values()):>16.1f} {sum(http_commands.values()):>15.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=10_000, help="tickets stored before the measured runs")
    parser.add_argument("--burst", type=int, default=3_000, help="ticket.submit commands on support.inbound.v1")
    parser.add_argument("--http", type=int, default=1_000, help="tickets through POST /v1/tickets")
    parser.add_argument("--concurrency", type=int, default=50, help="HTTP requests in flight")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds seeding, the burst and the HTTP run each wait for their last events")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # a kill still stops the platform
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-pipeline-"))
    platform = Platform(workdir, Ports.free(), environ=embedded_environ(RATE_LIMIT_PER_MINUTE="0"))
    try:
        print(f"starting the platform in {workdir}", flush=True)
        platform.start()
        figures = asyncio.run(benchmark(platform, args))
    finally:
        platform.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

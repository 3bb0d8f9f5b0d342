"""Insights benchmark: reports over many ticket facts, and facts applied per second from the topics. Never asserts.

    .venv/bin/python -m benchmarks.insights [--facts 1000000] [--csv-rows 100000] [--events 3000]
        [--mongodb-url URL] [--skip-reports] [--skip-consumer]

Reports (left out with --skip-reports), on --mongodb-url or else an nx-27017 started on a free port:
1. `--facts` facts, generated straight into insights' database as the fold writes them (spread
   over the last 120 days, 40 agents, 5 channels, 4 priorities, 2 policies, 3 tiers), indexes made.
2. The summary by day over 90 days and by agent over 30 days, a drill-down page (100 rows, one agent,
   first-reply breaches), a CSV export of up to `--csv-rows` rows through the service's own code
   (database cursor -> CSV lines): time, rows/s, the growth of the process's peak RSS, and the
   Python heap's peak (tracemalloc, in a second pass), against loading the same rows into a list
   first (the baseline a non-streaming export would be). CPU-ms of the server and of this process
   per report.

Consumer (left out with --skip-consumer): the embedded broker, Mongo-wire server and insights alone
(the integration tests' platform, on free ports). `--events` events (ticket.created, assigned,
message_added, sla fulfilled, solved: five per ticket over four topics) are published at once;
facts applied per second is the events insights processed (its own counter) per second until the
last one, against the raw hop: a plain consumer reading the same records from the same broker,
measured side by side in the same run. CPU-ms per event of insights and of nx-27017.
"""

import argparse
import asyncio
import gc
import os
import random
import resource
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from benchmarks.pipeline import cpu_seconds
from services.insights import domain
from services.insights.api import _csv
from services.insights.repository import FACTS, InsightsTransaction
from services.insights.service import Insights, Query
from shared import topics
from shared.clock import to_ms
from shared.envelope import new_event
from shared.events import (
    AuthorType,
    Channel,
    Customer,
    Priority,
    SlaFulfilled,
    TicketAssigned,
    TicketCreated,
    TicketMessageAdded,
    TicketSolved,
)
from shared.launcher.platform import Platform, Ports, embedded_environ
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork

DATABASE = "benchmark_insights"
CHANNELS = ("web", "email", "chat", "social", "phone")
PRIORITIES = ("low", "normal", "high", "urgent")
TIERS = ("standard", "premium", "vip")


def synthetic_fact(number: int, now_ms: int, rng: random.Random) -> dict:
    """A fact as `fact_document` writes it, from a state a real ticket's events would leave."""
    created = now_ms - rng.randrange(120 * domain.DAY_MS)
    ticket_id = f"bench-{number:08d}"
    state = domain.new_state()
    state["created"] = {
        "ms": created, "channel": rng.choice(CHANNELS), "category": f"cat{number % 7}", "language": "en",
        "customer_id": f"c{number % 50_000}", "tier": rng.choice(TIERS),
    }
    state["priority"] = [created, f"e{number}p", rng.choice(PRIORITIES)]
    wait = rng.expovariate(1 / 300) * 1000
    state["assignments"] = [[f"e{number}a", created + int(wait), f"agent-{number % 40:02d}", f"team-{number % 4}"]]
    reply = created + int(wait + rng.expovariate(1 / 1800) * 1000)
    state["first_agent_reply_ms"] = reply
    policy = "vip" if state["created"]["tier"] == "vip" else "standard"
    first_reply_target = 3_600_000
    state["clocks"]["first_reply"] = {
        "started_ms": created, "due": [created, f"e{number}s", created + first_reply_target], "warned": False,
        "breached": reply - created > first_reply_target, "fulfilled": [reply, f"e{number}f", (reply - created) / 1000 * 0.8],
        "last": [reply, 4, f"e{number}f", "fulfilled", policy],
    }
    if rng.random() < 0.8:
        solved = reply + int(rng.expovariate(1 / 20_000) * 1000)
        state["solves"] = [[f"e{number}v", solved]]
        state["clocks"]["resolution"] = {
            "started_ms": created, "due": [created, f"e{number}r", created + 36_000_000], "warned": False,
            "breached": solved - created > 36_000_000, "fulfilled": [solved, f"e{number}g", (solved - created) / 1000 * 0.7],
            "last": [solved, 4, f"e{number}g", "fulfilled", policy],
        }
        if rng.random() < 0.3:
            state["csat"] = [solved + 60_000, f"e{number}c", rng.randint(1, 5), None]
        if rng.random() < 0.2:
            state["nps"] = [solved + 600_000, f"e{number}n", rng.randint(0, 10), None]
    return domain.fact_document(ticket_id, state)


async def load_facts(url: str, count: int) -> None:
    client = AsyncMongoClient(url, tz_aware=True)
    try:
        collection = client[DATABASE][FACTS]
        await collection.drop()
        rng = random.Random(15)
        now = to_ms(datetime.now(UTC))
        started = time.perf_counter()
        batch: list[dict] = []
        for number in range(count):
            batch.append(synthetic_fact(number, now, rng))
            if len(batch) == 5000:
                await collection.insert_many(batch, ordered=False)
                batch = []
        if batch:
            await collection.insert_many(batch, ordered=False)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await InsightsTransaction(client[DATABASE], None).facts.ensure_indexes()
        print(f"loaded {count:,} facts in {loaded:.1f} s ({count / loaded:,.0f}/s); indexes in {time.perf_counter() - started:.1f} s")
    finally:
        await client.close()


async def reports(url: str, server_pid: int | None, csv_rows: int) -> None:
    client = AsyncMongoClient(url, tz_aware=True)
    uow = UnitOfWork(client, client[DATABASE], write_outbox=None, transaction_type=InsightsTransaction)
    insights = Insights(uow)
    zone = ZoneInfo("Europe/Berlin")
    now = to_ms(datetime.now(UTC))

    async def timed(label: str, work) -> object:
        server_before = cpu_seconds(server_pid) if server_pid else 0.0
        own_before = os.times()
        started = time.perf_counter()
        result = await work()
        seconds = time.perf_counter() - started
        own_after = os.times()
        server = (cpu_seconds(server_pid) - server_before) * 1000 if server_pid else float("nan")
        own = (own_after.user + own_after.system - own_before.user - own_before.system) * 1000
        print(f"{label:<44} {seconds * 1000:9.0f} ms   CPU: server {server:8.0f} ms, benchmark {own:7.0f} ms")
        return result

    try:
        ninety = Query(now - 90 * domain.DAY_MS, now, zone, {})
        days = await timed("summary by day, 90 days", lambda: insights.summary(ninety, "day", []))
        print(f"  {len(days)} groups, {sum(group['created'] for group in days):,} tickets")
        thirty = Query(now - 30 * domain.DAY_MS, now, zone, {})
        agents = await timed("summary by agent, 30 days", lambda: insights.summary(thirty, "agent", [60, 300, 900]))
        print(f"  {len(agents)} groups, {sum(group['created'] for group in agents):,} tickets")
        one_agent = Query(now - 90 * domain.DAY_MS, now, zone, {"agent": "agent-07"})
        page, cursor = await timed(
            "drill-down page (agent, first reply breached)",
            lambda: insights.tickets(one_agent, ("first_reply", "breached"), None, 100),
        )
        await timed("its next page", lambda: insights.tickets(one_agent, ("first_reply", "breached"), cursor, 100))
        print(f"  {len(page)} rows a page")

        # A range holding about `csv_rows` facts: facts are spread evenly over 120 days.
        total = await client[DATABASE][FACTS].estimated_document_count()
        span = min(120 * domain.DAY_MS, int(120 * domain.DAY_MS * csv_rows / max(1, total)))
        export = Query(now - span, now, zone, {})

        async def streamed() -> tuple[int, int]:
            size = rows = 0
            async for chunk in _csv(insights.export(export, None)):
                size += len(chunk)
                rows += chunk.count("\n")
            return rows - 1, size

        async def loaded_first() -> tuple[int, int]:
            everything = [row async for row in insights.export(export, None)]

            async def replay():
                for row in everything:
                    yield row

            size = sum([len(chunk) async for chunk in _csv(replay())])
            return len(everything), size

        # Timed without tracemalloc (it slows every allocation); the streamed export first, so the process's
        # peak RSS (a high-water mark) grows by what it needs before the baseline's list raises it.
        for label, work in (("CSV export, streamed", streamed), ("baseline: rows loaded into a list first", loaded_first)):
            gc.collect()
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            rows, size = await timed(label, work)
            seconds = time.perf_counter() - started
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
            await work()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"  {rows:,} rows, {size / 2**20:.1f} MiB in {seconds:.1f} s ({rows / seconds:,.0f} rows/s); process peak RSS "
                f"{rss_after / 1024:.0f} MiB (grew {(rss_after - rss_before) / 1024:.0f} MiB); Python heap peak {peak / 2**20:.1f} MiB "
                "(tracemalloc, in a second, untimed pass)"
            )
    finally:
        await client.close()


# --- the consumer ----------------------------------------------------------------------------------


def ticket_events(number: int, at: datetime) -> list[tuple[str, object]]:
    ticket = f"hop-{number:07d}"
    later = lambda seconds: at + timedelta(seconds=seconds)  # noqa: E731
    return [
        (topics.TICKETS, TicketCreated(ticket_id=ticket, channel=Channel.WEB, customer=Customer(id=f"c{number}"), subject="s",
                                       priority=Priority.NORMAL, required_skills=[], created_at=at)),
        (topics.ROUTING, TicketAssigned(ticket_id=ticket, agent_id=f"a{number % 20}", reason="r", assigned_at=later(30))),
        (topics.TICKETS, TicketMessageAdded(ticket_id=ticket, message_id=f"{ticket}-m", author_type=AuthorType.AGENT,
                                            public=True, body="b", added_at=later(60))),
        (topics.SLA, SlaFulfilled(ticket_id=ticket, metric="first_reply", target_seconds=3600, elapsed_seconds=60,
                                  breached=False, fulfilled_at=later(60))),
        (topics.TICKETS, TicketSolved(ticket_id=ticket, solved_at=later(600))),
    ]


def consumed(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("switchboard_events_consumed_total{") and 'outcome="processed"' in line
    )


async def consumer(events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="insights-bench-") as data:
        platform = Platform(Path(data), Ports.free(), environ=embedded_environ())
        platform.start(services=("insights",))
        try:
            bootstrap = f"127.0.0.1:{platform.ports.kafka}"
            url = platform.url("insights")
            start = datetime.now(UTC)
            records = [
                (topic, new_event(payload, source="benchmarks/insights", subject=payload.ticket_id).model_dump_json().encode(), payload.ticket_id)
                for number in range(max(1, events // 5))
                for topic, payload in ticket_events(number, start)
            ]
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
            await producer.start()
            before = consumed(url)
            cpu_before = {name: cpu_seconds(process.pid) for name, process in platform.processes.items()}
            started = time.perf_counter()
            try:
                for topic, value, key in records:
                    await producer.send(topic, value, key=key.encode())
                await producer.flush()
            finally:
                await producer.stop()
            while consumed(url) - before < len(records):
                await asyncio.sleep(0.05)
            through_insights = time.perf_counter() - started
            cpu = {name: (cpu_seconds(process.pid) - cpu_before[name]) * 1000 for name, process in platform.processes.items()}

            raw = AIOKafkaConsumer(
                topics.TICKETS, topics.ROUTING, topics.SLA, bootstrap_servers=bootstrap, group_id=None,
                auto_offset_reset="earliest", fetch_max_wait_ms=1000,
            )
            started = time.perf_counter()
            await raw.start()
            read = 0
            try:
                while read < len(records):
                    batches = await raw.getmany(timeout_ms=1000, max_records=500)
                    read += sum(len(batch) for batch in batches.values())
            finally:
                await raw.stop()
            raw_hop = time.perf_counter() - started
            rate, raw_rate = len(records) / through_insights, read / raw_hop
            print(f"{len(records):,} events ({len(records) // 5:,} tickets) through insights: {through_insights:.1f} s, {rate:,.0f} events/s")
            print(f"raw hop, the same records read by a plain consumer: {raw_hop:.1f} s, {raw_rate:,.0f} events/s")
            print(f"insights / raw hop: {rate / raw_rate:.2f}x")
            print("CPU-ms per event: " + ", ".join(f"{name} {ms / len(records):.2f}" for name, ms in cpu.items() if ms))
        finally:
            platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--csv-rows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--mongodb-url")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument("--skip-consumer", action="store_true")
    args = parser.parse_args()
    if not args.skip_reports:
        with ExitStack() as stack:
            url = args.mongodb_url or stack.enter_context(mongo_wire_server())
            server_pid = None if args.mongodb_url else _server_pid(url)
            asyncio.run(load_facts(url, args.facts))
            asyncio.run(reports(url, server_pid, args.csv_rows))
    if not args.skip_consumer:
        asyncio.run(consumer(args.events))


def _server_pid(url: str) -> int | None:
    """The nx-27017 listening on `url`'s port, found in /proc (for its CPU time)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"shared.launcher.mongo_wire" in command and port.encode() in command:
                return int(entry.name)
    return None


if __name__ == "__main__":
    main()

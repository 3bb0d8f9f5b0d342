"""Routing's matching at the scale target, side by side with a plain scan of every agent.

    python -m benchmarks.routing [--agents 10000] [--skills 200] [--tickets 100000] [--decisions 200]

Loads agents and waiting tickets into a fresh database (an embedded nx-27017 on a free port,
or MONGODB_URL when set, in a throw-away database), then times, for the same sample of
waiting tickets and in the same run:

- indexed: what the dispatcher does per decision: one query on the skill index with
  presence, channel capacity, language and tier in it (`AgentRepository.candidates`), then
  scoring (`choose_agent`);
- plain scan: read every agent and apply the same hard constraints and scoring in Python.

Both print time per decision and the Python memory a decision allocates at its peak
(tracemalloc), and the ratio of the two approaches on each. It also times what the
dispatcher does after a commit (`Dispatcher.drain` with a hint: one new ticket, or one agent
with room, against the whole queue) and prints the memory the process used (peak RSS) and
the database size. Results are ratios from one run, never absolute promises.
"""

import argparse
import asyncio
import contextlib
import os
import random
import resource
import statistics
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.routing.bootstrap import routing_use_cases
from services.routing.domain import Agent, EscalationPolicy, Presence, RoutingConfig, Tier, choose_agent
from services.routing.metrics import RoutingMetrics
from services.routing.repository import RoutingTransaction, _agent, _document, declines_fields, routed_ticket
from shared.clock import now_ms, utc_now
from shared.events import Priority
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox

LANGUAGES = ("en", "de", "fr", "es", "pt", "it", "nl", "pl")
TICKET_CHANNELS = ("web", "email", "chat")


def make_agent(number: int, skills: list[str], rng: random.Random) -> Agent:
    capacity = {channel: rng.randint(0, 5) for channel in TICKET_CHANNELS}
    load = {channel: rng.randint(0, limit) for channel, limit in capacity.items()}
    return Agent(
        id=f"agent-{number:05d}",
        name=f"Agent {number}",
        skills={skill: rng.randint(1, 5) for skill in rng.sample(skills, 5)},
        languages=rng.sample(LANGUAGES, rng.randint(1, 2)),
        tier=Tier.L2 if rng.random() < 0.2 else Tier.L1,
        capacity=capacity,
        status=Presence.AVAILABLE if rng.random() < 0.7 else Presence.AWAY,
        load=sum(load.values()),
        load_by_channel=load,
    )


def make_ticket(number: int, skills: list[str], rng: random.Random, now: int) -> dict:
    required = rng.sample(skills, rng.randint(1, 2))
    priority = rng.choice(list(Priority))
    return {
        "_id": f"T-{number:06d}",
        "state": "waiting",
        "priority": priority.value,
        "urgency": priority.rank,
        "sla_warned": False,
        "required_skills": required,
        "skill_levels": {skill: rng.randint(1, 3) for skill in required},
        "channel": rng.choice(TICKET_CHANNELS),
        "language": rng.choice((*LANGUAGES, None)),
        "category": None,
        "customer_id": f"c-{number}",
        "previous_agent_id": None,
        "created_ms": now - rng.randint(0, 3_600_000),
        "queued_ms": now,
        "escalation_step": 0,
        "next_escalation_ms": None,
        **declines_fields({}, None),
        "assignee_id": None,
        "version": 1,
    }


async def load(db, agents: int, skill_count: int, tickets: int, rng: random.Random) -> list[str]:
    skills = [f"skill-{n:03d}" for n in range(skill_count)]
    stored = RoutingTransaction(db, None)
    await stored.agents.ensure_indexes()
    await stored.tickets.ensure_indexes()
    for start in range(0, agents, 1000):
        batch = []
        for number in range(start, min(start + 1000, agents)):
            agent = make_agent(number, skills, rng)
            batch.append({**_document(agent), "free_by_channel": agent.free_by_channel})
        await db["agents"].insert_many(batch)
    now = now_ms()
    for start in range(0, tickets, 2000):
        await db["tickets"].insert_many(
            [make_ticket(number, skills, rng, now) for number in range(start, min(start + 2000, tickets))]
        )
    return skills


async def decide_indexed(db, document: dict) -> str | None:
    ticket = routed_ticket(document)
    requirements = EscalationPolicy().requirements(ticket, utc_now())
    candidates = await RoutingTransaction(db, None).agents.candidates(requirements)
    match = choose_agent(candidates, ticket, requirements, utc_now())
    return match.agent.id if match else None


async def decide_by_scan(db, document: dict) -> str | None:
    ticket = routed_ticket(document)
    requirements = EscalationPolicy().requirements(ticket, utc_now())
    everyone = [_agent(row) for row in await db["agents"].find({}).to_list()]
    match = choose_agent(everyone, ticket, requirements, utc_now())
    return match.agent.id if match else None


async def timed(decide, db, sample: list[dict]) -> tuple[list[float], list[str | None], int]:
    tracemalloc.start()
    durations, chosen = [], []
    for document in sample:
        started = time.perf_counter()
        chosen.append(await decide(db, document))
        durations.append(time.perf_counter() - started)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return durations, chosen, peak


def on_database(args: argparse.Namespace) -> None:
    """On MONGODB_URL when set, else on an nx-27017 of this run's own, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="routing-benchmark-") as directory, contextlib.ExitStack() as stack:
        workdir = Path(directory)
        url = os.environ.get("MONGODB_URL") or stack.enter_context(mongo_wire_server(workdir))
        asyncio.run(run(args, url, workdir))


async def run(args: argparse.Namespace, url: str, workdir: Path) -> None:
    rng = random.Random(args.seed)
    client = AsyncMongoClient(url, tz_aware=True)
    try:
        db = client[f"routing_benchmark_{os.getpid()}"]
        started = time.perf_counter()
        skills = await load(db, args.agents, args.skills, args.tickets, rng)
        print(f"loaded {args.agents:,} agents, {args.skills} skills, {args.tickets:,} waiting tickets "
              f"in {time.perf_counter() - started:.1f}s")

        ids = rng.sample(range(args.tickets), min(args.decisions, args.tickets))
        sample = [await db["tickets"].find_one({"_id": f"T-{number:06d}"}) for number in ids]
        scan_sample = sample[: max(1, args.decisions // 10)]

        indexed, chosen_indexed, indexed_peak = await timed(decide_indexed, db, sample)
        scanned, chosen_scan, scan_peak = await timed(decide_by_scan, db, scan_sample)
        agree = sum(a == b for a, b in zip(chosen_indexed, chosen_scan))
        matched = sum(1 for agent in chosen_indexed if agent)

        per_indexed = statistics.mean(indexed) * 1000
        per_scan = statistics.mean(scanned) * 1000
        print(f"indexed     : {per_indexed:8.2f} ms/decision (p95 {sorted(indexed)[int(len(indexed) * .95) - 1] * 1000:.2f} ms)"
              f" over {len(indexed)} decisions, {matched} matched; Python peak {indexed_peak / 1e6:.1f} MB")
        print(f"plain scan  : {per_scan:8.2f} ms/decision over {len(scanned)} decisions; "
              f"Python peak {scan_peak / 1e6:.1f} MB")
        print(f"ratio       : the plain scan takes {per_scan / per_indexed:.1f}x the time and "
              f"{scan_peak / max(indexed_peak, 1):.0f}x the Python memory of the indexed decision; "
              f"same choice on {agree}/{len(scan_sample)} shared tickets (the index path scores the 50 most-free "
              f"qualifying agents, the scan all of them)")

        embedded = not os.environ.get("MONGODB_URL")
        uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=workdir / "routing.lock" if embedded else None,
                         transaction_type=RoutingTransaction)
        dispatcher = routing_use_cases(uow, "switchboard/routing-benchmark", RoutingMetrics(CollectorRegistry()),
                                       RoutingConfig(offer_timeout=timedelta(seconds=120))).dispatcher
        # What the dispatcher does after a commit: serve one new ticket, or one agent who has room.
        arrivals, placed = [], 0
        for number in range(args.tickets, args.tickets + 20):
            await db["tickets"].insert_one(make_ticket(number, skills, rng, now_ms()))
            started = time.perf_counter()
            placed += await dispatcher.drain(ticket_ids={f"T-{number:06d}"}, sweep=False)
            arrivals.append(time.perf_counter() - started)
        print(f"new ticket  : {statistics.mean(arrivals) * 1000:8.2f} ms to serve one arrival "
              f"({placed}/20 placed at once)")
        roomy = await db["agents"].find({"status": "available", "free": {"$gt": 0}}, {"_id": 1}).limit(20).to_list()
        freed, placed = [], 0
        for row in roomy:
            started = time.perf_counter()
            placed += await dispatcher.drain(agent_ids={row["_id"]}, sweep=False)
            freed.append(time.perf_counter() - started)
        if freed:
            print(f"agent room  : {statistics.mean(freed) * 1000:8.2f} ms to fill an agent's free slots from a "
                  f"queue of {args.tickets:,} ({placed} tickets placed for {len(freed)} agents)")
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size = sum(path.stat().st_size for path in workdir.glob("**/*") if path.is_file()) / 1e6
        print(f"memory      : peak RSS of this process {peak_rss:.0f} MB; database files {size:.0f} MB")
        await client.drop_database(db.name)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--skills", type=int, default=200)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    on_database(parser.parse_args())


if __name__ == "__main__":
    main()

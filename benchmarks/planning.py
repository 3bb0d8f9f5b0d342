"""Planning's what-if simulation at the issue's scale, side by side with the live dispatcher's decisions.

    python -m benchmarks.planning [--tickets 50000] [--agents 500] [--skills 40] [--live-decisions 200]

Simulates one day: `--tickets` tickets (Poisson, on a daily curve, one or two skills each, on web,
email or chat, log-normal handle times) and `--agents` agents in three eight-hour shifts, through
`services.routing.planning.simulation` (routing's own decision functions). It prints the wall time,
this process's CPU time, its peak memory (RSS), and the time per decision.

Then, in the same run, the baseline: the live dispatcher (`Dispatcher.drain` with one new ticket,
as after a `ticket.created`) on an embedded nx-27017, with the same roster stored and available,
for `--live-decisions` tickets; its time and this process's CPU time per decision (the database
server's own CPU is not counted), and the ratio of the two. Ratios from one run, never promises.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from services.routing.bootstrap import routing_use_cases
from services.routing.domain import Agent, Presence, RoutedTicket, RoutingConfig, WaitingTicket
from services.routing.metrics import RoutingMetrics
from services.routing.planning.simulation import Arrival, RosterAgent, Scenario, Shift, Simulation, report
from services.routing.repository import RoutingTransaction, _document, _ticket_document
from shared.launcher.servers import mongo_wire_server
from shared.mongo import UnitOfWork
from shared.outbox import Outbox

DAY_START = datetime(2026, 3, 2, tzinfo=UTC)
CHANNELS = ("web", "email", "chat")
SHIFTS = ((0, 8), (8, 16), (16, 24))


def daily_curve(hour: float) -> float:
    """Relative arrival rate over the day: quiet at night, a morning and an afternoon peak."""
    return 0.2 + max(0.0, 1 - abs(hour - 10) / 4) + 0.8 * max(0.0, 1 - abs(hour - 15) / 3)


def roster(agents: int, skills: list[str], rng: random.Random) -> list[RosterAgent]:
    members = []
    for number in range(agents):
        start, end = SHIFTS[number % len(SHIFTS)]
        agent = Agent(
            id=f"agent-{number:04d}", name=f"Agent {number}",
            skills={skill: rng.randint(2, 5) for skill in rng.sample(skills, 10)},
            capacity={"web": 2, "email": 4, "chat": 3}, status=Presence.OFFLINE,
        )
        members.append(RosterAgent(agent, (Shift(DAY_START + timedelta(hours=start), DAY_START + timedelta(hours=end)),)))
    return members


def arrivals(tickets: int, skills: list[str], rng: random.Random) -> list[Arrival]:
    weights = [daily_curve(minute / 60) for minute in range(24 * 60)]
    minutes = rng.choices(range(24 * 60), weights=weights, k=tickets)
    made = []
    for number, minute in enumerate(sorted(minutes)):
        needs = rng.sample(skills, 1 if rng.random() < 0.8 else 2)
        ticket = WaitingTicket(
            ticket_id=f"T-{number:06d}", priority=rng.choice(("low", "normal", "normal", "high")),
            required_skills=needs, skill_levels={skill: rng.randint(1, 3) for skill in needs},
            channel=rng.choice(CHANNELS), created_at=DAY_START + timedelta(minutes=minute, seconds=rng.random() * 60),
        )
        made.append(Arrival(ticket, rng.lognormvariate(5.6, 0.6)))  # about 330 s on average
    return made


def simulate(args: argparse.Namespace, members: list[RosterAgent], tickets: list[Arrival]) -> float:
    scenario = Scenario(tuple(members), tuple(tickets), DAY_START, DAY_START + timedelta(days=1), target_seconds=60)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = Simulation(scenario, clock=time.perf_counter).run()
    answer = report(scenario, outcome)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_decision = outcome.decision_seconds / max(outcome.decisions, 1) * 1000
    summary = answer["summary"]
    print(f"simulation  : {len(tickets):,} tickets, {len(members)} agents, {args.skills} skills, one day: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / len(tickets) * 1000:.2f} CPU-ms per ticket)")
    print(f"              peak RSS {peak:.0f} MB (before the run {rss_before:.0f} MB); "
          f"{outcome.decisions:,} decisions, {per_decision:.3f} ms each (candidates, scoring, placing)")
    print(f"              result: {summary['assigned']:,}/{summary['tickets']:,} assigned, mean wait "
          f"{summary['wait_mean_seconds']} s, p90 {summary['wait_p90_seconds']} s, "
          f"{summary['within_target']:.1%} within 60 s")
    return per_decision


async def live(args: argparse.Namespace, url: str, workdir: Path, members: list[RosterAgent],
               tickets: list[Arrival]) -> float:
    client = AsyncMongoClient(url, tz_aware=True)
    try:
        db = client[f"planning_benchmark_{os.getpid()}"]
        stored = RoutingTransaction(db, None)
        await stored.agents.ensure_indexes()
        await stored.tickets.ensure_indexes()
        available = [member.agent.model_copy(update={"status": Presence.AVAILABLE}) for member in members]
        await db["agents"].insert_many([{**_document(agent), "free_by_channel": agent.free_by_channel}
                                        for agent in available])
        embedded = not os.environ.get("MONGODB_URL")
        uow = UnitOfWork(client, db, Outbox(db).write, transaction_lock=workdir / "routing.lock" if embedded else None,
                         transaction_type=RoutingTransaction)
        dispatcher = routing_use_cases(uow, "switchboard/planning-benchmark", RoutingMetrics(CollectorRegistry()),
                                       RoutingConfig()).dispatcher
        durations, cpu, placed = [], 0.0, 0
        for arrival in tickets[: args.live_decisions]:
            queued = RoutedTicket.queue(arrival.ticket.model_copy(update={"created_at": datetime.now(UTC)}),
                                        RoutingConfig().policy, correlation_id=None, causation_id=None)
            await db["tickets"].insert_one(_ticket_document(queued))
            wall, started_cpu = time.perf_counter(), time.process_time()
            placed += await dispatcher.drain(ticket_ids={queued.ticket_id}, sweep=False)
            durations.append(time.perf_counter() - wall)
            cpu += time.process_time() - started_cpu
        per_decision = statistics.mean(durations) * 1000
        print(f"live        : {per_decision:.2f} ms per decision (Dispatcher.drain of one new ticket, p95 "
              f"{sorted(durations)[int(len(durations) * .95) - 1] * 1000:.2f} ms), {cpu / len(durations) * 1000:.2f} "
              f"CPU-ms of this process each, {placed}/{len(durations)} placed, on "
              f"{'MONGODB_URL' if not embedded else 'an embedded nx-27017'}")
        await client.drop_database(db.name)
        return per_decision
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--skills", type=int, default=40)
    parser.add_argument("--live-decisions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    skills = [f"skill-{n:02d}" for n in range(args.skills)]
    members, tickets = roster(args.agents, skills, rng), arrivals(args.tickets, skills, rng)
    simulated = simulate(args, members, tickets)
    with tempfile.TemporaryDirectory(prefix="planning-benchmark-") as directory, contextlib.ExitStack() as stack:
        url = os.environ.get("MONGODB_URL") or stack.enter_context(mongo_wire_server(Path(directory)))
        live_decision = asyncio.run(live(args, url, Path(directory), members, tickets))
    print(f"ratio       : a simulated decision takes {simulated / live_decision:.3f}x the live dispatcher's "
          f"({live_decision / simulated:.0f}x faster: no database, no transaction, no broker)")


if __name__ == "__main__":
    main()

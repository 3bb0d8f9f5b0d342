"""PyMongo's native async client side by side with Motor, on the operations the services do.

    .venv/bin/python -m benchmarks.mongo_driver [--mongodb-url URL] [--documents N] [--rounds R]

The services use `pymongo.AsyncMongoClient` because Motor is deprecated in its favour, and
MongoDB's migration guide reports 1.5x to 2.4x Motor's throughput on find workloads. This
checks that claim here, in one run: both drivers run the same workloads, each driver in its
own database, and the driver that goes first alternates every round so that load drift on a
shared machine hits both alike. It prints ops/s per driver and the ratio pymongo-async/motor;
it never asserts.

Without --mongodb-url it starts the embedded nx-27017 on a free port in a temporary directory
and stops it when done.
"""

import argparse
import asyncio
import random
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable

from pymongo import AsyncMongoClient, ReturnDocument

from shared.launcher.servers import mongo_wire_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # Motor's deprecation is why we measure it
    from motor.motor_asyncio import AsyncIOMotorClient

DRIVERS = ("pymongo-async", "motor")
BATCH = 100
PAGE = 100


def ticket(number: int) -> dict:
    """Shaped like the services' documents: a string key, a few scalars, a list and a map."""
    return {
        "_id": f"T-{number:07d}",
        "state": "waiting",
        "priority": "normal",
        "required_skills": ["billing", "refunds"],
        "skill_levels": {"billing": 2, "refunds": 1},
        "subject": f"Refund for order {number}",
        "created_ms": 1_700_000_000_000 + number,
        "version": 1,
    }


# Each workload takes a database of either driver (their APIs agree on these calls) and the
# number of documents, and returns how many driver calls it made.

async def insert_one(db, n: int) -> int:
    for number in range(n):
        await db["tickets"].insert_one(ticket(number))
    return n


async def insert_many(db, n: int) -> int:
    for start in range(0, n, BATCH):
        await db["outbox"].insert_many([ticket(number) for number in range(start, min(start + BATCH, n))])
    return -(-n // BATCH)


async def find_one(db, n: int) -> int:
    for number in random.Random(1).choices(range(n), k=n):
        await db["tickets"].find_one({"_id": f"T-{number:07d}"})
    return n


async def find_many(db, n: int) -> int:
    """Documents by a list of keys, as sla reads clocks and intake threads. (A sorted key range
    would measure the embedded server instead: it scans the whole collection for one.)"""
    calls = max(1, n // 10)
    for start in random.Random(2).choices(range(n - PAGE + 1), k=calls):
        keys = [f"T-{number:07d}" for number in range(start, start + PAGE)]
        await db["tickets"].find({"_id": {"$in": keys}}).to_list()
    return calls


async def find_one_and_update(db, n: int) -> int:
    """A conditional claim, as routing's capacity and sla's firings are."""
    for number in random.Random(3).sample(range(n), n):
        await db["tickets"].find_one_and_update(
            {"_id": f"T-{number:07d}", "state": "waiting"},
            {"$set": {"state": "offered"}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
    return n


WORKLOADS: dict[str, Callable[..., Awaitable[int]]] = {
    "insert_one": insert_one,
    f"insert_many ({BATCH} docs)": insert_many,
    "find_one by _id": find_one,
    f"find -> {PAGE} docs (to_list)": find_many,
    "find_one_and_update": find_one_and_update,
}
"""In this order: the finds and the updates read what the inserts wrote."""


async def measure(url: str, documents: int, rounds: int, *, embedded: bool) -> None:
    suffix = f"{time.time_ns() % 10**9}"  # never touch someone else's database on a shared server
    seconds: dict[tuple[str, str], list[float]] = {(w, driver): [] for w in WORKLOADS for driver in DRIVERS}
    calls: dict[str, int] = {}
    async with AsyncMongoClient(url, serverSelectionTimeoutMS=2000) as pymongo_client:
        motor_client = AsyncIOMotorClient(url, serverSelectionTimeoutMS=2000)
        drivers = dict(zip(DRIVERS, (pymongo_client[f"driver_bench_pymongo_{suffix}"],
                                     motor_client[f"driver_bench_motor_{suffix}"])))
        try:
            for db in drivers.values():
                await db.command("ping")  # connect both pools before any clock starts
            for round_number in range(rounds):
                order = DRIVERS if round_number % 2 == 0 else DRIVERS[::-1]
                for db in drivers.values():
                    await db.client.drop_database(db.name)
                for workload, run in WORKLOADS.items():
                    for driver in order:
                        started = time.perf_counter()
                        calls[workload] = await run(drivers[driver], documents)
                        seconds[workload, driver].append(time.perf_counter() - started)
                print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
        finally:
            for db in drivers.values():
                await db.client.drop_database(db.name)
            motor_client.close()

    print(f"\n{documents:,} documents, {rounds} rounds; ops/s = driver calls per second over all rounds")
    print(f"{'workload':32s} {'pymongo-async':>14s} {'motor':>10s} {'ratio':>7s}  per round: median (min-max)")
    for workload in WORKLOADS:
        total = calls[workload] * rounds
        rate = {driver: total / sum(seconds[workload, driver]) for driver in DRIVERS}
        per_round = [m / p for p, m in zip(seconds[workload, "pymongo-async"], seconds[workload, "motor"])]
        print(f"{workload:32s} {rate['pymongo-async']:14,.0f} {rate['motor']:10,.0f} "
              f"{rate['pymongo-async'] / rate['motor']:6.2f}x  {statistics.median(per_round):.2f}x "
              f"({min(per_round):.2f}x-{max(per_round):.2f}x)")
    if embedded:
        print("\nNote: the embedded nx-27017 (SQLite behind a Python wire-protocol server, on this same machine)\n"
              "dominates the cost of every call, so the drivers' own overhead is a small part of what is timed;\n"
              "against a real MongoDB the ratios will differ (MongoDB's migration guide reports 1.5x-2.4x on find\n"
              "workloads). A wide per-round range means the machine's load moved the figures, not the driver.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongodb-url", help="a running server; default: start the embedded nx-27017")
    parser.add_argument("--documents", type=int, default=1000, help="documents per workload and round")
    parser.add_argument("--rounds", type=int, default=16,
                        help="even, so each driver goes first as often; many short rounds even out load spikes")
    args = parser.parse_args()
    if args.documents < PAGE or args.rounds < 1:
        parser.error(f"--documents must be at least {PAGE} and --rounds at least 1")
    if args.mongodb_url:
        asyncio.run(measure(args.mongodb_url, args.documents, args.rounds, embedded=False))
        return
    with mongo_wire_server() as url:
        asyncio.run(measure(url, args.documents, args.rounds, embedded=True))


if __name__ == "__main__":
    main()

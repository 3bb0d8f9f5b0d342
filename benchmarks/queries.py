"""Every hot query of the services, timed on nx-27017 at 10,000 and 50,000 documents.

Each size gets a fresh server. In every collection the newest 1,000 documents hold 100 live ones
(waiting, offered, running, unsent), as a running platform's would; the rest is history. Each
query runs through the service's own repository method. Beside it, the same query as it was
written before (a plain equality, `$in` on a field, `count_documents`), in the same run. A query
served by an index costs the same at both sizes; a scan grows with the history (see
`shared.mongo_filters`).

    .venv/bin/python -m benchmarks.queries [--sizes 10000 50000] [--calls 20]
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient

from services.intake.repository import IntakeTransaction
from services.routing.domain import RoutedTicketState
from services.routing.repository import QUEUE_DEPTH, RoutingTransaction
from services.sla.domain import Clock, Metric
from services.sla.repository import SlaTransaction, _clock_document
from shared.clock import now_ms
from shared.consumer import Inbox
from shared.events import Customer, Priority
from shared.launcher.servers import mongo_wire_server

Call = Callable[[], Awaitable[object]]
SEED_BATCH = 1000
LIVE_STRIDE, LIVE_SPAN = 10, 1000


def is_live(i: int, size: int) -> bool:
    """One in ten of the newest 1,000 documents."""
    return i >= size - LIVE_SPAN and i % LIVE_STRIDE == 0


async def seed(collection, make: Callable[[int], dict], start: int, stop: int) -> None:
    for first in range(start, stop, SEED_BATCH):
        await collection.insert_many([make(i) for i in range(first, min(first + SEED_BATCH, stop))])


async def per_call_ms(call: Call, calls: int, budget_seconds: float = 3.0) -> float:
    """After one call to warm up: `calls` calls, or as many as fit in the budget (a scan can take seconds)."""
    started = time.perf_counter()
    await call()
    if (warm_up := time.perf_counter() - started) > budget_seconds:
        return warm_up * 1000
    done, started = 0, time.perf_counter()
    while done < calls and (done == 0 or time.perf_counter() - started < budget_seconds):
        await call()
        done += 1
    return (time.perf_counter() - started) / done * 1000


class Routing:
    def __init__(self, db, size: int) -> None:
        self.db, self.tickets, self.size = db, db["tickets"], size
        self.repository = RoutingTransaction(db, None).tickets

    async def prepare(self) -> None:
        await self.repository.ensure_indexes()

    def document(self, i: int) -> dict:
        live = is_live(i, self.size)
        state = (RoutedTicketState.WAITING if i % (2 * LIVE_STRIDE) == 0 else RoutedTicketState.OFFERED) if live else RoutedTicketState.DONE
        priority = list(Priority)[i % 4].value
        return {"_id": f"T{i:07d}", "state": state, "priority": priority, "urgency": i % 4, "created_ms": i,
                "channel": "web", "language": None, "required_skills": [], "skill_levels": {},
                "assignee_id": f"agent-{i % 50}" if state != RoutedTicketState.WAITING else None, "next_escalation_ms": i,
                "offer_id": f"offer-{i}" if state == RoutedTicketState.OFFERED else None, "offer_ids": [f"offer-{i}"],
                "offer_expires_ms": i, "decline_lapse_ms": None, "version": 1}

    async def grow(self) -> None:
        await seed(self.tickets, self.document, 0, self.size)
        waiting = [self.document(i)["priority"] for i in range(self.size) if self.document(i)["state"] == RoutedTicketState.WAITING]
        # What the transactions that enqueue tickets would have counted.
        await self.db["counters"].update_one(
            {"_id": QUEUE_DEPTH}, {"$inc": {p.value: waiting.count(p.value) for p in Priority}}, upsert=True
        )

    def cases(self) -> list[tuple[str, Call, Call]]:
        size = self.size
        newest_offer = size - LIVE_STRIDE
        offer, agent = f"offer-{newest_offer}", f"agent-{newest_offer % 50}"

        async def count_each_priority() -> list[int]:
            return [await self.tickets.count_documents({"state": RoutedTicketState.WAITING, "priority": p.value}) for p in Priority]

        return [
            ("routing: queue head (first 100 waiting)", lambda: self.repository.waiting(100),
             lambda: self.tickets.find({"state": RoutedTicketState.WAITING}).sort([("urgency", DESCENDING), ("created_ms", ASCENDING)])
             .limit(100).to_list()),
            ("routing: offers of an agent", lambda: self.repository.offers_of(agent),
             lambda: self.tickets.find({"assignee_id": agent, "state": RoutedTicketState.OFFERED}).to_list()),
            ("routing: ticket of an open offer", lambda: self.repository.by_offer(offer),
             lambda: self.tickets.find_one({"offer_ids": {"$in": [offer]}})),
            ("routing: escalations due", lambda: self.repository.escalation_due(size, 500),
             lambda: self.tickets.find({"state": RoutedTicketState.WAITING, "next_escalation_ms": {"$ne": None, "$lte": size}})
             .limit(500).to_list()),
            ("routing: queue depth gauge (every 2 s)", self.repository.depth_by_priority,
             count_each_priority),
        ]


class Sla:
    def __init__(self, db, size: int) -> None:
        self.db, self.clocks, self.size = db, db["clocks"], size
        self.repository = SlaTransaction(db, None).clocks

    async def prepare(self) -> None:
        await self.repository.ensure_indexes()

    def document(self, i: int) -> dict:
        live = is_live(i, self.size)
        clock = Clock(ticket_id=f"T{i // 2:07d}", metric=list(Metric)[i % 2 * 3], cycle=0, policy="default",
                      priority="normal", calendar="24x7", target_ms=3_600_000, warnings=(0.75,), pause_on=frozenset(),
                      started_ms=i, running=live, stopped=not live, elapsed_ms=0, since_ms=i if live else None,
                      next_fire_ms=now_ms() + 3_600_000 + i if live else None, version=1)
        return _clock_document(clock)

    async def grow(self) -> None:
        await seed(self.clocks, self.document, 0, self.size)
        await self.repository.add_live(sum(is_live(i, self.size) for i in range(self.size)))

    def cases(self) -> list[tuple[str, Call, Call]]:
        newest = self.size // 2  # two clocks a ticket
        ticket, batch = f"T{newest - 1:07d}", [f"T{i:07d}" for i in range(newest - 100, newest)]
        return [
            ("sla: clocks of a ticket (every event)", lambda: self.repository.clocks_of(ticket),
             lambda: self.clocks.find({"ticket_id": {"$in": [ticket]}}).to_list()),
            ("sla: clocks of 100 tickets (a batch)", lambda: self.repository.clocks_of_tickets(batch),
             lambda: self.clocks.find({"ticket_id": {"$in": batch}}).to_list()),
            ("sla: timers due in the horizon", lambda: self.repository.due_before(now_ms() + 60_000, 500),
             lambda: self.clocks.find({"next_fire_ms": {"$lte": now_ms() + 60_000}}).sort("next_fire_ms", ASCENDING)
             .limit(500).to_list()),
            ("sla: live clocks gauge", self.repository.count_live,
             lambda: self.clocks.count_documents({"stopped": False})),
        ]


class Intake:
    def __init__(self, db, size: int) -> None:
        self.db, self.messages, self.tickets, self.customers = db, db["messages"], db["tickets"], db["customers"]
        self.size = size

    async def prepare(self) -> None:
        repositories = IntakeTransaction(self.db, None)
        for repository in (repositories.tickets, repositories.messages, repositories.customers):
            await repository.ensure_indexes()

    async def grow(self) -> None:
        start, stop = 0, self.size
        await seed(self.messages, lambda i: {"_id": f"M{i:07d}", "ticket_id": f"T{i // 3:07d}", "author_type": "customer",
                                             "author_id": None, "body": "hello", "public": True, "created_ms": i},
                   start, stop)
        await seed(self.tickets, lambda i: {"_id": f"T{i:07d}", "status": "solved" if is_live(i, stop) else "closed",
                                            "solved_ms": i, "created_ms": i}, start, stop)
        await seed(self.customers, lambda i: {"_id": f"C{i:07d}", "email": f"c{i}@example.com", "created_ms": i},
                   start, stop)

    def cases(self) -> list[tuple[str, Call, Call]]:
        ticket, email = f"T{(self.size - 1) // 3:07d}", f"c{self.size - 1}@example.com"
        repositories = IntakeTransaction(self.db, None)
        messages, tickets, customers = repositories.messages, repositories.tickets, repositories.customers

        async def upsert_by_plain_email() -> None:
            existing = await self.customers.find_one({"email": email})
            await self.customers.find_one_and_update({"_id": existing["_id"]}, {"$set": {"updated_ms": now_ms()}})

        return [
            ("intake: messages of a ticket", lambda: messages.of_ticket(ticket),
             lambda: self.messages.find({"ticket_id": ticket}).sort("created_ms", ASCENDING).limit(500).to_list()),
            ("intake: solved tickets due to close (sweep)", lambda: tickets.solved_before(0),
             lambda: self.tickets.find({"status": "solved", "solved_ms": {"$lt": 0}}).limit(200).to_list()),
            ("intake: customer found by email (submit)", lambda: customers.upsert(Customer(email=email), now_ms()),
             upsert_by_plain_email),
        ]


class Consumer:
    """The inbox every consumer batch reads and writes, and the outbox poll (`shared/outbox.py`, as written now)."""

    def __init__(self, db, size: int) -> None:
        self.db, self.inbox, self.outbox, self.size = db, Inbox(db), db["outbox"], size
        self.batches = 0

    async def prepare(self) -> None:
        await self.inbox.ensure_indexes()
        await self.outbox.create_index([("sent", ASCENDING), ("created_ns", ASCENDING)])

    async def grow(self) -> None:
        start, stop = 0, self.size
        await seed(self.inbox.collection, lambda i: {"_id": f"g:{i:09d}", "expires_ms": now_ms() + 86_400_000 + i},
                   start, stop)
        await seed(self.outbox, lambda i: {"_id": f"E{i:07d}", "sent": not is_live(i, stop),
                                           "created_ns": i, "sent_ms": i}, start, stop)

    async def unseen_batch(self) -> None:
        self.batches += 1
        events = [SimpleNamespace(id=f"new-{self.batches}-{n}") for n in range(100)]
        events += [SimpleNamespace(id=f"{n:09d}") for n in range(self.size - 100, self.size)]
        await self.inbox.unseen(SimpleNamespace(session=None), "g", events)

    def cases(self) -> list[tuple[str, Call, Call]]:
        return [
            ("inbox: a batch of 200 events (100 seen)", self.unseen_batch, self.unseen_batch),
            ("outbox poll, 100 unsent (not changed here)",
             lambda: self.outbox.find({"sent": {"$eq": False}}).sort("created_ns", ASCENDING).limit(100).to_list(),
             lambda: self.outbox.find({"sent": False}).sort("created_ns", ASCENDING).limit(100).to_list()),
        ]


async def measure(size: int, calls: int) -> dict[str, tuple[float, float]]:
    """(now, before) ms per call of every case, on a fresh server holding `size` documents a collection."""
    with mongo_wire_server() as url:
        client = AsyncMongoClient(url)
        services = [kind(client[f"bench_{kind.__name__.lower()}"], size) for kind in (Routing, Sla, Intake, Consumer)]
        figures = {}
        for service in services:
            print(f"seeding {type(service).__name__}: {size:,}", file=sys.stderr)
            await service.prepare()
            await service.grow()
        for service in services:
            for name, indexed, plain in service.cases():
                print(f"{size:,}: {name}", file=sys.stderr)
                figures[name] = (await per_call_ms(indexed, calls), await per_call_ms(plain, calls))
        await client.close()
    return figures


async def run(sizes: list[int], calls: int) -> None:
    by_size = [await measure(size, calls) for size in sizes]
    header = " | ".join(f"{size:,} docs: now / before" for size in sizes)
    print(f"| query (ms per call) | {header} | before / now at {sizes[-1]:,} |")
    print("| --- |" + " --- |" * (len(sizes) + 1))
    for name in by_size[0]:
        cells = " | ".join(f"{figures[name][0]:.1f} / {figures[name][1]:.1f}" for figures in by_size)
        now, before = by_size[-1][name]
        print(f"| {name} | {cells} | {before / now:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="at least 2,000")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(sorted(args.sizes), args.calls))


if __name__ == "__main__":
    main()

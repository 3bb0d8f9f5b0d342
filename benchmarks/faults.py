"""The fault suite: tickets flow through every service while a part of the platform crashes, freezes
or is fed garbage, and afterwards nothing acknowledged may be lost and no side effect may happen twice.

For each fault, a stream of `ticket.submit` commands goes to the inbound topic (each one counts once
the broker has acknowledged it) and the fault strikes in the middle of it. Then, with no manual step
(the launcher's supervisor restarts what died, as `switchboard up` does), every acknowledged
submission must become exactly one ticket, assigned once to an agent within capacity, with one
acknowledgement mail and one clock per SLA metric, and every consumer group's lag must return to 0.

    .venv/bin/python -m benchmarks.faults                      # the full version: a table
    .venv/bin/python -m benchmarks.faults --tickets 3000 --kills 3

`tests/integration/test_fault_suite.py` runs a small version in `make test`.
"""

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared import topics
from shared.kafka_admin import read_to_end
from shared.launcher.platform import DATABASE_SERVERS, SERVICES, Platform, Ports, embedded_environ

KILLS = {f"kill {name}": (name,) for name in (*SERVICES, "kafka", "broker_storage")} | {
    "kill mongodb": tuple(DATABASE_SERVERS.values())}
"""What each fault SIGKILLs: one process, or every service's database server at once."""
FAULTS = (*KILLS, "stop kafka 15s", "malformed burst")
TOPICS = (*topics.ALL, topics.dead_letter(topics.INBOUND))
CONSUMER_GROUPS = tuple(f"switchboard-{service}" for service in SERVICES)
SKILL = "faults"
METRICS_STARTED_ON_CREATE = ("first_reply", "resolution")
"""The clocks the default SLA policy starts for a new ticket (services/sla/policies.yaml)."""
AGENT_CAPACITY = 1000
FREEZE_SECONDS = 15.0
MALFORMED_REPEATS = 5
REREAD_AFTER_SECONDS = 15.0
"""While a fault has not healed, how often the observer reads the whole log again (see Observer.reread)."""


@dataclass
class Outcome:
    """What one fault did to the tickets submitted around it."""

    fault: str
    load: int
    lost: int = 0
    duplicated: int = 0
    over_capacity: int = 0
    resent: int = 0
    """Mails delivered again with their first Message-ID (a send made but not yet recorded when notify
    died): the receiver drops them; not duplicates, but counted, per the README's guarantee."""
    stuck: int = 0
    recovery_seconds: float | None = None
    not_ready: set[str] = field(default_factory=set)
    """Services whose /health/ready said 503 while the fault lasted (sampled twice a second)."""
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.over_capacity or self.stuck) and self.recovery_seconds is not None


class Observer:
    """Reads every topic and the mail sink from the start, and indexes what happened to each ticket."""

    def __init__(self, bootstrap: str, maildir: Path) -> None:
        self._bootstrap = bootstrap
        self._maildir = maildir
        self._mail_seen: set[str] = set()
        self.tickets_of_customer: dict[str, set[str]] = defaultdict(set)
        self.assignments: dict[str, set[str]] = defaultdict(set)
        self.assignee: dict[str, str] = {}
        self.clocks: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.acknowledged: dict[str, set[str]] = defaultdict(set)
        self.mails_to: dict[str, set[str]] = defaultdict(set)
        """Recipient -> the Message-IDs of the mails they got: a mail sent again carries its first Message-ID,
        so the receiver shows it once (the resend is counted apart, in `resent_to`)."""
        self.resent_to: dict[str, int] = defaultdict(int)
        self.dead_letters: dict[tuple[int, int], dict[str, bytes]] = {}
        """(partition, offset) -> the headers of each record parked on the inbound topic's DLQ."""
        self.end_offsets: dict[TopicPartition, int] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        consumer = self._consumer()
        await consumer.start()
        self._task = asyncio.create_task(self._read(consumer))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *TOPICS, bootstrap_servers=self._bootstrap, group_id=None, auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                except KafkaError:
                    await asyncio.sleep(0.5)  # the broker is down or frozen: read on once it is back
                    continue
                for records in batches.values():
                    for record in records:
                        self._index(record)
        finally:
            await consumer.stop()

    async def reread(self, timeout_seconds: float = 60.0) -> None:
        """Index the topics again from their first record to their true ends (`read_to_end`).

        The live consumer is fast but not the judge: around a restart of the embedded broker's storage
        it has been seen to skip records, or to stall, that a fresh read of the same log finds. What
        counts is what the log holds, as any later reader would see it. A broker that cannot be read
        right now (a fault still on) is tried again until `timeout_seconds`.
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                records = await read_to_end(self._bootstrap, TOPICS, timeout_seconds=deadline - time.monotonic())
            except (KafkaError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            for record in records:
                self._index(record)
            return

    def _index(self, record) -> None:
        """Idempotent: a record indexed twice (live, then by `reread`) counts once."""
        where = TopicPartition(record.topic, record.partition)
        self.end_offsets[where] = max(self.end_offsets.get(where, 0), record.offset + 1)
        if record.topic == topics.dead_letter(topics.INBOUND):
            self.dead_letters.setdefault((record.partition, record.offset), dict(record.headers))
            return
        if record.topic == topics.INBOUND:
            return
        event = json.loads(record.value)
        data = event.get("data") or {}
        match event["type"]:
            case "support.ticket.created.v1":
                self.tickets_of_customer[data["customer"]["id"]].add(data["ticket_id"])
            case "support.ticket.assigned.v1":
                self.assignments[data["ticket_id"]].add(event["id"])
                self.assignee[data["ticket_id"]] = data["agent_id"]
            case "support.sla.clock_started.v1":
                self.clocks[data["ticket_id"], data["metric"]].add(event["id"])
            case "support.notification.sent.v1" if data["kind"] == "acknowledgement":
                self.acknowledged[data["ticket_id"]].add(data["notification_id"])

    def read_mail(self) -> None:
        for path in self._maildir.glob("*.eml"):
            if path.name not in self._mail_seen:
                self._mail_seen.add(path.name)
                mail = message_from_bytes(path.read_bytes(), policy=policy.default)
                recipient, message_id = str(mail["To"]), str(mail["Message-ID"])
                if message_id in self.mails_to[recipient]:
                    self.resent_to[recipient] += 1
                self.mails_to[recipient].add(message_id)

    def ticket_of(self, customer_id: str) -> str | None:
        return next(iter(self.tickets_of_customer.get(customer_id, ())), None)

    def complete(self, customer_id: str) -> bool:
        """Everything a submission leads to has happened (at least once)."""
        return not self.missing(customer_id)

    def missing(self, customer_id: str) -> list[str]:
        """What a submission has not led to yet."""
        ticket = self.ticket_of(customer_id)
        if ticket is None:
            return ["ticket"]
        missing = [] if self.assignments.get(ticket) else ["assignment"]
        missing += [f"{metric} clock" for metric in METRICS_STARTED_ON_CREATE if not self.clocks.get((ticket, metric))]
        return missing + ([] if self.mails_to.get(email_of(customer_id)) else ["acknowledgement mail"])


def email_of(customer_id: str) -> str:
    return f"{customer_id}@example.com"


def submit_command(customer_id: str) -> bytes:
    """A `ticket.submit` from an outside system, with its own CloudEvents id."""
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "faults", "type": "support.ticket.submit.v1",
        "subject": customer_id, "correlationid": str(uuid.uuid4()),
        "data": {"channel": "api", "customer": {"id": customer_id, "email": email_of(customer_id)},
                 "subject": "Parcel lost", "body": "Where is my parcel?", "required_skills": [SKILL]},
    }).encode()


MALFORMED = (
    b"not json at all",
    b'{"specversion": "1.0", "type": "support.ticket.submit.v1"}',
    json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "faults", "type": "support.ticket.submit.v1",
                "subject": "x", "correlationid": "x", "data": {"channel": "carrier-pigeon"}}).encode(),
    b"\xff\xfe\x00 binary garbage",
)


class FaultSuite:
    def __init__(self, platform: Platform, *, tickets: int, kills: int, rate: float, recovery_limit: float) -> None:
        self.platform = platform
        self.tickets = tickets
        self.kills = kills
        self.rate = rate
        self.recovery_limit = recovery_limit
        self.bootstrap = f"127.0.0.1:{platform.ports.kafka}"
        self.observer = Observer(self.bootstrap, platform.maildir)
        self.headers = {"Authorization": f"Bearer {platform.api_key}"}
        self.agents: dict[str, int] = {}
        self.run_id = uuid.uuid4().hex[:6]
        self.unready_now: set[str] = set()

    async def run(self, faults: Sequence[str]) -> list[Outcome]:
        supervisor = asyncio.create_task(self._supervise())
        readiness = asyncio.create_task(self._sample_readiness())
        await self.observer.start()
        try:
            # Room for every ticket of the run (routing takes up to 1,000 slots an agent): capacity never binds.
            agents = max(8, -(-len(faults) * self.tickets // (AGENT_CAPACITY - 10)))
            async with httpx.AsyncClient(base_url=self.platform.url("routing"), headers=self.headers, timeout=10) as routing:
                for agent in (f"fault-agent-{n}" for n in range(agents)):
                    body = {"name": agent, "skills": {SKILL: 1}, "capacity": AGENT_CAPACITY, "status": "available"}
                    (await routing.put(f"/v1/agents/{agent}", json=body)).raise_for_status()
                    self.agents[agent] = AGENT_CAPACITY
            return [await self.run_fault(number, fault) for number, fault in enumerate(faults)]
        finally:
            await self.observer.stop()
            supervisor.cancel()
            readiness.cancel()
            await asyncio.gather(supervisor, readiness, return_exceptions=True)

    async def _sample_readiness(self) -> None:
        """Which services say they cannot work right now: what a Kubernetes readiness probe would see."""
        async with httpx.AsyncClient(timeout=3) as client:
            while True:
                for service in SERVICES:
                    try:
                        ready = (await client.get(f"{self.platform.url(service)}/health/ready")).status_code == 200
                    except httpx.HTTPError:
                        ready = False  # not serving at all: restarting
                    if not ready:
                        self.unready_now.add(service)
                await asyncio.sleep(0.5)

    async def _supervise(self) -> None:
        """What `switchboard up` does between its other work: restart what died."""
        while True:
            for happening in self.platform.supervise():
                print(f"    supervisor: {happening}", flush=True)
            await asyncio.sleep(0.2)

    async def run_fault(self, number: int, fault: str) -> Outcome:
        customers = [f"f{self.run_id}-{number}-{n}" for n in range(self.tickets)]
        strikes = {len(customers) * (k + 1) // (self.kills + 2) for k in range(self.kills)}
        if fault not in KILLS:
            strikes = {len(customers) // 3}
        dead_letters_before = len(self.observer.dead_letters)
        self.unready_now = set()
        acknowledged: list[str] = []
        faulted_at = time.monotonic()
        freezes: list[asyncio.Task] = []
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await self._start_retrying(producer)
        try:
            for n, customer_id in enumerate(customers):
                if n in strikes:
                    faulted_at = time.monotonic()
                    if fault in KILLS:
                        self._kill(KILLS[fault])
                    elif fault.startswith("stop kafka"):
                        freezes.append(asyncio.create_task(self._freeze("kafka", FREEZE_SECONDS)))
                    else:
                        for bad in MALFORMED * MALFORMED_REPEATS:
                            await self._send(producer, bad, b"malformed")
                if await self._send(producer, submit_command(customer_id), customer_id.encode()):
                    acknowledged.append(customer_id)
                await asyncio.sleep(1 / self.rate)
            await asyncio.gather(*freezes)
        finally:
            await producer.stop()
        outcome = Outcome(fault, load=len(acknowledged))
        outcome.recovery_seconds = await self._recovered(acknowledged, faulted_at)
        if outcome.recovery_seconds is None:
            outcome.problems.append(await self._not_recovered(acknowledged))
        outcome.not_ready, self.unready_now = self.unready_now, set()
        if fault == "malformed burst":  # each bad event must be parked with its reason, none dropped
            parked = list(self.observer.dead_letters.values())[dead_letters_before:]
            with_reason = sum(1 for headers in parked if headers.get("dlq-error"))
            if with_reason != len(MALFORMED) * MALFORMED_REPEATS:
                outcome.lost += abs(len(MALFORMED) * MALFORMED_REPEATS - with_reason)
                outcome.problems.append(f"{with_reason} of {len(MALFORMED) * MALFORMED_REPEATS} malformed events parked")
        await self._judge(outcome, acknowledged)
        return outcome

    def _kill(self, names: tuple[str, ...]) -> None:
        for name in names:
            process = self.platform.processes[name]
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)

    async def _freeze(self, name: str, seconds: float) -> None:
        pid = self.platform.processes[name].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    async def _start_retrying(self, producer: AIOKafkaProducer) -> None:
        deadline = time.monotonic() + self.recovery_limit
        while True:
            try:
                return await producer.start()
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)

    async def _send(self, producer: AIOKafkaProducer, value: bytes, key: bytes) -> bool:
        """Send until the broker acknowledges, as a careful client would (the same event id each time:
        intake opens one ticket for it however often it arrives). False if it never did."""
        deadline = time.monotonic() + self.recovery_limit
        while time.monotonic() < deadline:
            try:
                await producer.send_and_wait(topics.INBOUND, value, key=key)
                return True
            except KafkaError:
                await asyncio.sleep(0.5)
        return False

    async def _recovered(self, customers: list[str], faulted_at: float) -> float | None:
        """Seconds from the fault until every submission has had all its effects and no group lags."""
        deadline = faulted_at + self.recovery_limit
        next_reread = time.monotonic() + REREAD_AFTER_SECONDS
        while time.monotonic() < deadline:
            if time.monotonic() > next_reread:
                await self.observer.reread()
                next_reread = time.monotonic() + REREAD_AFTER_SECONDS
            self.observer.read_mail()
            if all(self.observer.complete(c) for c in customers) and await self._lag() == 0:
                return time.monotonic() - faulted_at
            await asyncio.sleep(0.5)
        return None

    async def _not_recovered(self, customers: list[str]) -> str:
        incomplete = {c: missing for c in customers if (missing := self.observer.missing(c))}
        first = ", ".join(f"{c} lacks {' and '.join(what)}" for c, what in list(incomplete.items())[:3])
        return f"not healed in {self.recovery_limit:.0f} s: {len(incomplete)} submissions incomplete ({first or '-'}), lag {await self._lag()}"

    async def _lag(self) -> int | None:
        """Messages not yet committed by the services' consumer groups, against the end of each partition
        as read (the embedded broker's own end offsets are those of the last batch's start)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            lag = 0
            ends = dict(self.observer.end_offsets)
            for group in CONSUMER_GROUPS:
                committed = await admin.list_consumer_group_offsets(group, partitions=list(ends))
                for partition, position in committed.items():
                    if position.offset >= 0:
                        lag += max(0, ends[partition] - position.offset)
            return lag
        except KafkaError:
            return None
        finally:
            await admin.close()

    async def _judge(self, outcome: Outcome, customers: list[str]) -> None:
        observer = self.observer
        await observer.reread()
        observer.read_mail()
        for customer_id in customers:
            tickets = observer.tickets_of_customer.get(customer_id, set())
            if not tickets:
                outcome.lost += 1
                outcome.problems.append(f"{customer_id}: acknowledged, but no ticket")
                continue
            ticket = next(iter(tickets))
            extra = (
                len(tickets) - 1,
                max(0, len(observer.assignments.get(ticket, ())) - 1),
                max(0, len(observer.mails_to.get(email_of(customer_id), ())) - 1),
                sum(max(0, len(observer.clocks.get((ticket, m), ())) - 1) for m in METRICS_STARTED_ON_CREATE),
            )
            if any(extra):
                outcome.duplicated += sum(extra)
                outcome.problems.append(f"{customer_id}: extra tickets, assignments, mails, clocks = {extra}")
            outcome.resent += observer.resent_to.get(email_of(customer_id), 0)
            if not observer.complete(customer_id):
                outcome.stuck += 1
                outcome.problems.append(f"{customer_id}: ticket {ticket} is stuck")
        assigned_to: dict[str, int] = defaultdict(int)
        for ticket, agent in observer.assignee.items():
            assigned_to[agent] += 1
        async with httpx.AsyncClient(base_url=self.platform.url("routing"), headers=self.headers, timeout=10) as routing:
            for agent, capacity in self.agents.items():
                load = (await routing.get(f"/v1/agents/{agent}")).json()["load"]
                if load > capacity or load != assigned_to[agent]:
                    outcome.over_capacity += 1
                    outcome.problems.append(f"{agent}: load {load}, capacity {capacity}, assigned {assigned_to[agent]}")


def table(outcomes: Sequence[Outcome], recovery_limit: float) -> str:
    rows = [("fault", "load", "lost", "duplicated", "over capacity", "stuck", "recovery", "said not ready",
             "mails resent (same Message-ID)")]
    for o in outcomes:
        recovery = f"{o.recovery_seconds:.1f} s" if o.recovery_seconds is not None else f"> {recovery_limit:.0f} s"
        rows.append((o.fault, str(o.load), str(o.lost), str(o.duplicated), str(o.over_capacity), str(o.stuck), recovery,
                     ", ".join(sorted(o.not_ready)) or "none", str(o.resent)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


async def run_suite(
    data_dir: Path, faults: Sequence[str], *, tickets: int, kills: int, rate: float, recovery_limit: float
) -> list[Outcome]:
    """A platform of its own (its parts are killed), on free ports, stopped whatever happens."""
    platform = Platform(data_dir, Ports.free(), environ=embedded_environ())
    platform.start()
    try:
        suite = FaultSuite(platform, tickets=tickets, kills=kills, rate=rate, recovery_limit=recovery_limit)
        return await suite.run(faults)
    finally:
        platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=1000, help="submissions streamed around each fault")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the part in each kill fault")
    parser.add_argument("--rate", type=float, default=50.0, help="submissions a second")
    parser.add_argument("--recovery-limit", type=float, default=600.0, help="seconds a fault may take to heal")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these (default: all)")
    parser.add_argument("--data-dir", type=Path, help="keep the platform's data and logs here (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switchboard-faults-") as scratch:
        outcomes = asyncio.run(run_suite(
            args.data_dir or Path(scratch), args.fault or FAULTS, tickets=args.tickets, kills=args.kills,
            rate=args.rate, recovery_limit=args.recovery_limit,
        ))
    print(table(outcomes, args.recovery_limit))
    for outcome in outcomes:
        for problem in outcome.problems[:5]:
            print(f"  {outcome.fault}: {problem}")


if __name__ == "__main__":
    main()

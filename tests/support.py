"""Helpers for tests that talk to a running platform the way a user would, and for tests that count
what a use case costs against the real Mongo-wire server."""

import asyncio
import inspect
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, monitoring

from shared.consumer import EventConsumer, Inbox, Prefetch, Subscription
from shared.envelope import Envelope
from shared.kafka_admin import read_to_end
from shared.metrics import PlatformMetrics
from shared.mongo import UnitOfWork
from shared.mongo_filters import eq
from shared.launcher.platform import Platform, Ports, embedded_environ


def unique(prefix: str) -> str:
    """A name of one test's own (customer, skill, agent), so tests sharing a platform never take
    each other's tickets."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(check, timeout: float = 30, interval: float = 0.2):
    """Poll `check()` (plain or async) until it returns something truthy; that value."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval)


@contextmanager
def started_platform(data_dir: Path, **settings: str) -> Iterator["RunningPlatform"]:
    """The whole platform, as `switchboard up` starts it, on free ports; stopped whatever happens."""
    platform = Platform(data_dir, Ports.free(), environ=embedded_environ(**settings))
    platform.start()
    try:
        yield RunningPlatform(platform)
    finally:
        platform.stop()


def take_every_ticket_no_test_claims(platform: "RunningPlatform") -> None:
    """An agent with no skills and room for the whole session, on the platform the tests share.

    Many tests submit tickets that need no skill and no one in particular. Without this agent they
    would wait, and the queue serves the oldest first: a later test's agent, who fits any such ticket,
    would be handed them before the ticket its test is waiting for. Tests that watch an assignment
    ask for a skill of their own (`unique`), which this agent lacks. Called again after anything that
    may have changed every agent (the routing API's fuzz).
    """
    response = httpx.put(
        f"{platform.platform.url('routing')}/v1/agents/session-desk",
        json={"name": "Session desk", "skills": {}, "capacity": 1000, "status": "available"},
        headers=platform.headers,
        timeout=10,
    )
    response.raise_for_status()


class RunningPlatform:
    """A started platform plus what a test needs to talk to it like a user would."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.headers = {"Authorization": f"Bearer {platform.api_key}"}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.platform.ports.kafka}"

    def client(self, service: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.platform.url(service), headers=self.headers, timeout=10)

    async def submit_ticket(self, **overrides) -> dict:
        ticket = {
            "channel": "web",
            "customer": {"id": f"cust-{uuid.uuid4().hex[:8]}", "email": "ann@example.com", "name": "Ann Lee"},
            "subject": "Refund for order 1042",
            "body": "I was charged twice, please refund one payment.",
            **overrides,
        }
        async with self.client("intake") as intake:
            response = await intake.post("/v1/tickets", json=ticket)
        assert response.status_code == 201, response.text
        return response.json()

    async def put_agent(self, agent_id: str, **profile) -> dict:
        body = {"name": agent_id, "skills": {}, "capacity": 1, "status": "available", **profile}
        async with self.client("routing") as routing:
            response = await routing.put(f"/v1/agents/{agent_id}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for_assignee(self, ticket_id: str, timeout: float = 20) -> str:
        async with self.client("intake") as intake:
            async with asyncio.timeout(timeout):
                while True:
                    ticket = (await intake.get(f"/v1/tickets/{ticket_id}")).json()
                    if ticket["assignee_id"]:
                        return ticket["assignee_id"]
                    await asyncio.sleep(0.1)

    async def publish(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()

    async def read_topic(self, topic: str, *, until=lambda records: False, timeout: float = 15) -> list:
        """Every record on `topic` so far, read from the start; waits until `until(records)` or timeout."""
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        records: list = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                records.extend(record for batch in batches.values() for record in batch)
                if until(records):
                    break
        finally:
            await consumer.stop()
        return records

    async def outbox_drained(self, service: str) -> bool:
        """Every event `service` has decided so far is on its topic (the broker acknowledged it): with
        `events_to_end`, the watermark for "nothing else was published"."""
        client = AsyncMongoClient(self.platform.mongodb_url(service))
        try:
            unsent = await client[f"switchboard_{service}"]["outbox"].find_one(eq(sent=False), {"_id": 1})
        finally:
            await client.close()
        return unsent is None

    async def events_to_end(self, topic: str, timeout: float = 30) -> list[dict]:
        """Every event on `topic` up to its end as it is now: complete without waiting for anything more."""
        return [json.loads(record.value) for record in await read_to_end(self.bootstrap, [topic], timeout_seconds=timeout)]

    async def events(self, topic: str, *, until=lambda events: False, timeout: float = 15) -> list[dict]:
        records = await self.read_topic(
            topic, until=lambda records: until([json.loads(r.value) for r in records]), timeout=timeout
        )
        return [json.loads(record.value) for record in records]

    def mail(self) -> list[EmailMessage]:
        return [
            message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted(Path(self.platform.maildir).glob("*.eml"))
        ]




class HtmlForm(HTMLParser):
    """A page's one form, read as a browser reads it: where and how it posts, and what it would send as it
    stands (checked radios, textareas); and every address the page would fetch besides itself."""

    def __init__(self) -> None:
        super().__init__()
        self.action = self.method = None
        self.fields: dict[str, str] = {}
        self.fetches: list[str] = []
        self._textarea: str | None = None

    @classmethod
    def of(cls, page: str) -> "HtmlForm":
        form = cls()
        form.feed(page)
        return form

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.fetches += [attributes[name] for name in ("src", "href") if name in attributes]
        if tag == "form":
            self.action, self.method = attributes["action"], attributes["method"]
        elif tag == "input" and (attributes.get("type") != "radio" or "checked" in attributes):
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "textarea":
            self._textarea = attributes["name"]
            self.fields[self._textarea] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


class CommandNames(monitoring.CommandListener):
    """The MongoDB commands a client sent, by name, in order: a use case's round trips. `on` pairs each
    name with the collection it addressed ("" for one that addresses none, such as commitTransaction)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.on: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        target = event.command.get(event.command_name)
        self.on.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class DeadLetterSink:
    """The `DeadLetters` of an `EventConsumer` under test: it keeps what it is asked to park."""

    def __init__(self) -> None:
        self.dead_letters: list[dict] = []

    async def park(self, value, **record) -> None:
        self.dead_letters.append({"value": value, **record})


def event_consumer(
    subscriptions: list[Subscription], *, group: str, uow: UnitOfWork, dead_letters: DeadLetterSink, prefetch: Prefetch
) -> EventConsumer:
    """A service's consumer, fed records by the test instead of a broker (`consume`), retrying fast."""
    return EventConsumer(
        subscriptions,
        group=group,
        uow=uow,
        inbox=Inbox(uow.db),
        broker=None,
        dead_letters=dead_letters,
        metrics=PlatformMetrics(CollectorRegistry()),
        max_attempts=3,
        backoff_seconds=0.01,
        prefetch=prefetch,
    )


def consumer_records(topic_of, events: list[Envelope]) -> list[ConsumerRecord]:
    """`events` as one polled batch of records; `topic_of(event)` names each one's topic."""
    return [
        ConsumerRecord(
            topic=topic_of(event), partition=0, offset=offset, timestamp=0, timestamp_type=0,
            key=event.subject.encode() if event.subject else None, value=event.to_json(),
            checksum=None, serialized_key_size=0, serialized_value_size=0, headers=[],
        )
        for offset, event in enumerate(events)
    ]

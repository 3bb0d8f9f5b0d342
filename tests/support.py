"""Helpers for tests that talk to a running platform the way a user would."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.launcher.platform import Platform, Ports, embedded_environ


@contextmanager
def started_platform(data_dir: Path, **settings: str) -> Iterator["RunningPlatform"]:
    """The whole platform, as `switchboard up` starts it, on free ports; stopped whatever happens."""
    platform = Platform(data_dir, Ports.free(), environ=embedded_environ(**settings))
    platform.start()
    try:
        yield RunningPlatform(platform)
    finally:
        platform.stop()


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

    async def publish(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
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



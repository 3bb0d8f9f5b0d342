"""The running services log structured JSON lines, and no log the platform writes holds a customer's personal data.

A ticket from a customer with a unique address and name goes through all four services (up to
the acknowledgement mail); then the log files are read as a log shipper would read them: the
services' and the embedded servers' (broker, Mongo-wire server, SMTP sink).
"""

import asyncio
import json
import uuid

import pytest
from pymongo import AsyncMongoClient

from shared.launcher.platform import DATABASE_SERVERS, SERVICES

pytestmark = pytest.mark.integration


async def test_no_log_holds_personal_data_and_service_logs_are_json_lines(running_platform):
    marker = uuid.uuid4().hex[:10]
    address, name = f"pii-{marker}@example.com", f"Zed{marker}"
    # A skill no agent has: the ticket waits in the queue and takes no capacity from other tests' agents.
    await running_platform.submit_ticket(
        customer={"id": f"c-{marker}", "email": address, "name": name}, required_skills=[f"ops-{marker}"]
    )
    async with asyncio.timeout(30):  # notify has handled it: the ticket went all the way through
        while not [m for m in running_platform.mail() if m["To"] == address]:
            await asyncio.sleep(0.2)

    # nx-27017's engine logs the filter of a query it cannot run in SQL: a lookup of this customer by an
    # `$expr` match is one (it logs at WARNING by default, so its log would hold the address).
    async with AsyncMongoClient(running_platform.platform.mongodb_url("intake")) as mongo:
        tickets = mongo["switchboard_intake"]["tickets"]
        match = {"$match": {"$expr": {"$eq": ["$customer.email", address]}}}
        assert [row async for row in await tickets.aggregate([match, {"$count": "n"}])] == [{"n": 1}]

    logs = sorted(path for path in running_platform.platform.logs.rglob("*") if path.is_file())
    server_logs = {f"{server}-server.log" for server in DATABASE_SERVERS.values()}
    assert {f"{service}.log" for service in SERVICES} | server_logs <= {path.name for path in logs}
    for path in logs:
        text = path.read_text(errors="replace")
        assert address not in text and name not in text, f"{path.name} contains the customer's personal data"

    for service in SERVICES:
        text = (running_platform.platform.logs / f"{service}.log").read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines, f"{service}.log has no JSON line"
        assert all(line["service"] == service and line["level"] and line["time"] for line in lines)
        # FastStream's own lines come through the same handler, with their context fields.
        assert any(line.get("group_id") == f"switchboard-{service}" for line in lines), (
            f"{service}.log has no FastStream line naming its consumer group"
        )

"""The running services log structured JSON lines, and no customer's personal data.

A ticket from a customer with a unique address and name goes through all four services (up to
the acknowledgement mail); then the services' log files are read as a log shipper would read them.
"""

import asyncio
import json
import uuid

import pytest

from shared.launcher.platform import SERVICES

pytestmark = pytest.mark.integration


async def test_service_logs_are_json_lines_without_personal_data(running_platform):
    marker = uuid.uuid4().hex[:10]
    address, name = f"pii-{marker}@example.com", f"Zed{marker}"
    # A skill no agent has: the ticket waits in the queue and takes no capacity from other tests' agents.
    await running_platform.submit_ticket(
        customer={"id": f"c-{marker}", "email": address, "name": name}, required_skills=[f"ops-{marker}"]
    )
    async with asyncio.timeout(30):  # notify has handled it: the ticket went all the way through
        while not [m for m in running_platform.mail() if m["To"] == address]:
            await asyncio.sleep(0.2)

    for service in SERVICES:
        text = (running_platform.platform.logs / f"{service}.log").read_text()
        assert address not in text and name not in text, f"{service}.log contains the customer's personal data"
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines, f"{service}.log has no JSON line"
        assert all(line["service"] == service and line["level"] and line["time"] for line in lines)
        # FastStream's own lines come through the same handler, with their context fields.
        assert any(line.get("group_id") == f"switchboard-{service}" for line in lines), (
            f"{service}.log has no FastStream line naming its consumer group"
        )

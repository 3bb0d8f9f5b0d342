"""Insights on the platform as `switchboard up` runs it: a real ticket's events, from intake, SLA and
routing, become its fact; it and its database server run at a lower CPU priority."""

import os
from datetime import timedelta

import pytest

from shared.clock import utc_now
from shared.launcher.platform import YIELDING_NICENESS
from tests.support import RunningPlatform, eventually, unique

pytestmark = pytest.mark.integration


async def test_a_submitted_and_answered_ticket_becomes_a_fact(running_platform: RunningPlatform) -> None:
    start = utc_now() - timedelta(seconds=5)
    customer = unique("insights-customer")
    ticket = await running_platform.submit_ticket(channel="chat", customer={"id": customer, "tier": "premium"})
    async with running_platform.client("intake") as intake:
        reply = {"author_type": "agent", "author_id": unique("agent"), "body": "We refunded it."}
        assert (await intake.post(f"/v1/tickets/{ticket['id']}/messages", json=reply)).status_code == 201

    async def fact():
        async with running_platform.client("insights") as insights:
            response = await insights.get("/v1/reports/tickets", params={
                "from": start.isoformat(), "to": (utc_now() + timedelta(minutes=1)).isoformat(), "tier": "premium", "limit": 1000,
            })
        assert response.status_code == 200, response.text
        row = next((row for row in response.json()["tickets"] if row["ticket_id"] == ticket["id"]), None)
        # SLA's verdict and intake's reply come on different topics, in either order: wait for both.
        return row if row and row["first_reply_outcome"] == "achieved" and row["first_reply_seconds"] is not None else None

    row = await eventually(fact, timeout=30)
    assert (row["channel"], row["customer_id"], row["tier"]) == ("chat", customer, "premium")
    assert row["first_reply_business_seconds"] is not None
    assert row["first_reply_policy"] is not None


def test_insights_and_its_database_yield_the_cores_to_the_path_customers_wait_on(running_platform: RunningPlatform) -> None:
    processes = running_platform.platform.processes
    launcher = os.getpriority(os.PRIO_PROCESS, 0)  # the tests' own: the platform is started from it
    niceness = {name: os.getpriority(os.PRIO_PROCESS, process.pid) for name, process in processes.items()}
    assert niceness["insights"] == niceness["mongodb_insights"] == min(19, launcher + YIELDING_NICENESS)
    assert {name for name, value in niceness.items() if value != launcher} == {"insights", "mongodb_insights"}

"""Notify with the other services, as `switchboard up` runs them: what a customer sees."""

import asyncio
import uuid

import pytest

pytestmark = pytest.mark.integration


async def test_the_acknowledgement_tells_the_customer_the_first_reply_time_of_their_sla_policy(running_platform):
    address = f"sla-{uuid.uuid4().hex[:8]}@example.com"
    ticket = await running_platform.submit_ticket(customer={"id": f"c-{uuid.uuid4().hex[:8]}", "email": address})

    async with asyncio.timeout(30):
        while not (mine := [m for m in running_platform.mail() if m["To"] == address]):
            await asyncio.sleep(0.2)
    async with running_platform.client("sla") as sla:
        [clock] = [c for c in (await sla.get(f"/v1/tickets/{ticket['id']}/sla")).json()["clocks"] if c["metric"] == "first_reply"]
    async with running_platform.client("notify") as notify:
        [delivery] = (await notify.get("/v1/notifications", params={"ticket_id": ticket["id"]})).json()["notifications"]

    text = mine[0].get_body(("plain",)).get_content()
    assert "We aim to send you a first reply within" in text
    assert clock["due_at"][:16].replace("T", " ") in text
    assert mine[0]["In-Reply-To"] == f"<{ticket['id']}@switchboard.local>"
    assert (delivery["kind"], delivery["state"], delivery["recipient_role"]) == ("acknowledgement", "sent", "customer")

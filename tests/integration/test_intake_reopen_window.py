"""The reopen window, on its own platform started with a one-second window (`REOPEN_WINDOW_SECONDS=1`)."""

import asyncio

import pytest

from shared import topics
from tests.support import started_platform

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def short_window(tmp_path_factory):
    with started_platform(tmp_path_factory.mktemp("reopen"), REOPEN_WINDOW_SECONDS="1") as platform:
        yield platform


async def test_a_reply_after_the_window_starts_a_follow_up_and_closes_the_solved_ticket(short_window):
    ticket = await short_window.submit_ticket()
    path = f"/v1/tickets/{ticket['id']}"
    async with short_window.client("intake") as intake:
        solved = await intake.patch(path, json={"status": "solved"})
        within = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "Wait, one more"})
        await intake.patch(path, json={"status": "solved"})
        await asyncio.sleep(1.5)
        late = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "It broke again"})
        original = (await intake.get(path)).json()

    assert solved.json()["status"] == "solved"
    assert within.json()["ticket"]["id"] == ticket["id"] and within.json()["ticket"]["status"] == "open"
    assert late.status_code == 201 and late.json()["follow_up_of"] == ticket["id"]
    follow_up = late.json()["ticket"]
    assert follow_up["id"] != ticket["id"] and follow_up["status"] == "new"
    assert original["status"] == "closed"
    events = await short_window.events(
        topics.TICKETS, until=lambda es: any(e["subject"] == follow_up["id"] for e in es)
        and any(e["subject"] == ticket["id"] and e["type"] == "support.ticket.closed.v1" for e in es),
    )
    mine = [e["type"].split(".")[2] for e in events if e["subject"] == ticket["id"]]
    assert mine.count("solved") == 2 and mine.count("reopened") == 1 and mine.count("closed") == 1
    [created] = [e for e in events if e["subject"] == follow_up["id"] and e["type"] == "support.ticket.created.v1"]
    assert created["data"]["follow_up_of"] == ticket["id"]

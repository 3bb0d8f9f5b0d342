"""Intake end to end on the embedded stack: triage, customers, channels, deduplication, the lifecycle, CSAT."""

import asyncio
import json
import time
import uuid
from urllib.parse import urljoin

import httpx
import pytest

from shared import topics
from shared.signing import csat_signature
from tests.support import HtmlForm, eventually, unique

pytestmark = pytest.mark.integration

CSAT_RECEIVED = "support.ticket.csat_received.v1"



def of_ticket(ticket_id: str, *types: str):
    """An `until` for `events()`: every one of `types` has been seen for the ticket."""
    wanted = {f"support.ticket.{t}.v1" for t in types}
    return lambda events: wanted <= {e["type"] for e in events if e["subject"] == ticket_id}


async def ticket_events(platform, ticket_id: str, *types: str, timeout: float = 20) -> list[dict]:
    events = await platform.events(topics.TICKETS, until=of_ticket(ticket_id, *types), timeout=timeout)
    return [e for e in events if e["subject"] == ticket_id]


async def test_a_ticket_is_triaged_and_created_says_why(running_platform):
    ticket = await running_platform.submit_ticket(
        subject="Charged twice", body="I was charged twice for order 1042, please refund one payment."
    )

    assert (ticket["category"], ticket["required_skills"], ticket["priority"]) == ("billing", ["billing"], "high")
    assert ticket["language"] == "en" and -1 <= ticket["sentiment"] <= 1
    assert "priority high: refund requested ('refund')" in ticket["triage_reasons"]
    [created] = [e for e in await ticket_events(running_platform, ticket["id"], "created")
                 if e["type"] == "support.ticket.created.v1"]
    data = created["data"]
    assert (data["category"], data["language"], data["tags"]) == ("billing", "en", ["billing"])
    assert data["triage_reasons"] == ticket["triage_reasons"]
    async with running_platform.client("intake") as intake:
        metrics = (await intake.get("/metrics")).text
    assert 'switchboard_tickets_created_total{channel="web",priority="high"}' in metrics


async def test_what_the_caller_supplies_wins_over_triage_and_says_so(running_platform):
    ticket = await running_platform.submit_ticket(
        subject="Outage", body="Everything is down!", priority="low", required_skills=["ops"], language="de",
    )
    assert (ticket["priority"], ticket["required_skills"], ticket["language"]) == ("low", ["ops"], "de")
    assert "priority low: set by the caller" in ticket["triage_reasons"]


async def test_customers_are_upserted_a_vip_is_raised_and_their_tickets_listed(running_platform):
    customer_id = unique("vip")
    await running_platform.submit_ticket(customer={"id": customer_id, "email": "vi@example.com", "tier": "vip",
                                                   "language": "en", "timezone": "Europe/Berlin"},
                                         subject="Question", body="Where do I change my settings?")
    second = await running_platform.submit_ticket(customer={"id": customer_id, "name": "Vi P"},
                                                  subject="Another question", body="And my notification settings?")

    assert second["priority"] == "high" and "priority high: vip tier" in second["triage_reasons"]
    assert second["customer"]["tier"] == "vip" and second["customer"]["email"] == "vi@example.com"
    async with running_platform.client("intake") as intake:
        profile = (await intake.get(f"/v1/customers/{customer_id}")).json()
        missing = await intake.get("/v1/customers/nobody-here")
    assert (profile["name"], profile["tier"], profile["timezone"]) == ("Vi P", "vip", "Europe/Berlin")
    assert [t["id"] for t in profile["tickets"]][0] == second["id"] and len(profile["tickets"]) == 2
    assert missing.status_code == 404


async def test_a_returning_customer_brings_their_previous_agent_as_an_affinity_hint(running_platform):
    skill, agent, customer_id = unique("affinity"), unique("ada"), unique("c")
    await running_platform.put_agent(agent, skills={skill: 3}, capacity=5)
    first = await running_platform.submit_ticket(customer={"id": customer_id}, required_skills=[skill])
    assert await running_platform.wait_for_assignee(first["id"], timeout=60) == agent

    again = await running_platform.submit_ticket(customer={"id": customer_id}, required_skills=[skill])

    assert again["previous_agent_id"] == agent
    created = [e for e in await ticket_events(running_platform, again["id"], "created")]
    assert created[0]["data"]["previous_agent_id"] == agent


async def test_the_lifecycle_publishes_every_change_with_concurrency_and_transition_checks(running_platform):
    ticket = await running_platform.submit_ticket()
    path = f"/v1/tickets/{ticket['id']}"
    async with running_platform.client("intake") as intake:
        note = await intake.post(f"{path}/messages", json={"author_type": "agent", "author_id": "ada",
                                                             "body": "Checking the payment", "public": False})
        current = await intake.get(path)
        version = current.headers["ETag"]
        pending = await intake.patch(path, json={"status": "pending", "priority": "urgent", "tags": ["Refund"]},
                                     headers={"If-Match": version})
        stale = await intake.patch(path, json={"status": "open"}, headers={"If-Match": version})
        invalid = await intake.patch(path, json={"status": "closed"})
        reply = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "Any news?"})
        solved = await intake.patch(path, json={"status": "solved"})
        reopened = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "Not fixed"})
        messages = (await intake.get(f"{path}/messages")).json()
        bad = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "x", "public": False})

    assert note.status_code == 201 and note.json()["message"]["public"] is False
    assert pending.status_code == 200, pending.text
    assert (pending.json()["status"], pending.json()["priority"], pending.json()["tags"]) == ("pending", "urgent", ["refund"])
    assert stale.status_code == 412 and "version" in stale.json()["detail"]
    assert invalid.status_code == 409 and invalid.json()["allowed"] == ["open", "on_hold", "solved"]
    assert reply.json()["ticket"]["status"] == "open", "a customer's reply wakes a pending ticket"
    assert solved.json()["status"] == "solved"
    assert reopened.json()["ticket"]["status"] == "open" and reopened.json()["follow_up_of"] is None
    assert [m["author_type"] for m in messages] == ["agent", "customer", "customer"]
    assert bad.status_code == 422 and "agents only" in bad.json()["message"]

    events = await ticket_events(running_platform, ticket["id"], "message_added", "status_changed",
                                 "priority_changed", "tags_changed", "solved", "reopened")
    types = [e["type"].split(".")[2] for e in events]
    assert types.count("message_added") == 3 and types.count("solved") == 1 and types.count("reopened") == 1
    statuses = [(e["data"]["previous_status"], e["data"]["status"]) for e in events if "status_changed" in e["type"]]
    assert statuses == [("new", "pending"), ("pending", "open"), ("open", "solved"), ("solved", "open")]
    [note_event] = [e for e in events if "message_added" in e["type"] and not e["data"]["public"]]
    assert note_event["data"]["author_type"] == "agent" and note_event["data"]["body"] == "Checking the payment"


async def test_a_reply_to_a_closed_ticket_starts_a_follow_up(running_platform):
    ticket = await running_platform.submit_ticket()
    path = f"/v1/tickets/{ticket['id']}"
    async with running_platform.client("intake") as intake:
        await intake.patch(path, json={"status": "solved"})
        await intake.patch(path, json={"status": "closed"})
        agent = await intake.post(f"{path}/messages", json={"author_type": "agent", "body": "One more thing"})
        reply = await intake.post(f"{path}/messages", json={"author_type": "customer", "body": "It broke again"})

    assert agent.status_code == 409 and "closed" in agent.json()["detail"]
    assert reply.status_code == 201
    follow_up = reply.json()["ticket"]
    assert reply.json()["follow_up_of"] == ticket["id"] and follow_up["follow_up_of"] == ticket["id"]
    assert follow_up["id"] != ticket["id"] and follow_up["body"] == "It broke again"
    [created] = await ticket_events(running_platform, follow_up["id"], "created")
    assert created["data"]["follow_up_of"] == ticket["id"]


async def test_tickets_are_listed_by_filter_with_cursor_pagination(running_platform):
    customer_id = unique("lister")
    ids = [(await running_platform.submit_ticket(customer={"id": customer_id}, priority="low"))["id"] for _ in range(3)]
    async with running_platform.client("intake") as intake:
        first = (await intake.get("/v1/tickets", params={"customer_id": customer_id, "limit": 2})).json()
        second = (await intake.get("/v1/tickets", params={"customer_id": customer_id, "limit": 2,
                                                          "cursor": first["next_cursor"]})).json()
        none = (await intake.get("/v1/tickets", params={"customer_id": customer_id, "priority": "urgent"})).json()
        bad = await intake.get("/v1/tickets", params={"status": "sleeping"})

    assert [t["id"] for t in first["tickets"] + second["tickets"]] == list(reversed(ids))
    assert second["next_cursor"] is None and none["tickets"] == []
    assert bad.status_code == 422 and "status" in bad.json()["message"]


async def test_channel_kinds_carry_their_metadata_and_a_channel_message_id_opens_one_ticket(running_platform):
    call = {"channel": "phone", "customer": {"id": unique("caller")}, "subject": "Call", "body": "Called about settings",
            "metadata": {"call_id": "c-1", "caller_number": "+49301234", "duration_seconds": 95},
            "external_id": unique("call")}
    async with running_platform.client("intake") as intake:
        first = await intake.post("/v1/tickets", json=call)
        again = await intake.post("/v1/tickets", json=call)
        wrong = await intake.post("/v1/tickets", json={**call, "channel": "social", "external_id": unique("post")})

    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["metadata"]["duration_seconds"] == 95 and first.json()["priority"] == "high"
    assert wrong.status_code == 422 and "metadata.network" in wrong.json()["message"]


async def test_the_correlation_id_a_client_sends_reaches_every_event_that_follows(running_platform):
    correlation = unique("order-1042-help")
    call = {"channel": "web", "customer": {"id": unique("cust")}, "subject": "Refund", "body": "Charged twice."}
    async with running_platform.client("intake") as intake:
        response = await intake.post("/v1/tickets", json=call, headers={"X-Correlation-Id": correlation})
    ticket_id = response.json()["id"]

    created = await ticket_events(running_platform, ticket_id, "created")
    clocks = await running_platform.events(
        topics.SLA, until=lambda es: any(e["subject"] == ticket_id for e in es), timeout=20
    )

    assert [e["correlationid"] for e in created] == [correlation]
    assert {e["correlationid"] for e in clocks if e["subject"] == ticket_id} == {correlation}, "sla's events too"


async def test_concurrent_submissions_each_get_their_own_answer_and_a_refused_one_fails_alone(running_platform):
    customer = {"id": unique("burst")}
    ticket = {"channel": "web", "customer": customer, "subject": "Burst", "body": "Where is my parcel?"}
    used, shared = unique("key"), unique("key")
    async with running_platform.client("intake") as intake:
        earlier = await intake.post("/v1/tickets", json={**ticket, "customer": {"id": unique("earlier")}},
                                    headers={"Idempotency-Key": used})
        requests = [
            *(intake.post("/v1/tickets", json={**ticket, "subject": f"Burst {n}"}) for n in range(46)),
            *(intake.post("/v1/tickets", json=ticket, headers={"Idempotency-Key": shared}) for _ in range(2)),
            intake.post("/v1/tickets", json=ticket, headers={"Idempotency-Key": used}),  # a different submission
            intake.post("/v1/tickets", json={**ticket, "channel": "social"}),  # no metadata.network
        ]
        answers = await asyncio.gather(*requests)
        profile = (await intake.get(f"/v1/customers/{customer['id']}")).json()

    *fresh, first_shared, second_shared, reused, unfit = answers
    assert earlier.status_code == 201
    assert [a.status_code for a in fresh + [first_shared, second_shared]] == [201] * 48, [a.text for a in answers]
    assert reused.status_code == 409 and "Idempotency-Key" in reused.json()["message"]
    assert unfit.status_code == 422 and "metadata.network" in unfit.json()["message"]
    assert first_shared.json()["id"] == second_shared.json()["id"]
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in (first_shared, second_shared)) == ["", "true"]
    opened = [a.json()["id"] for a in fresh] + [first_shared.json()["id"]]
    assert sorted(t["id"] for t in profile["tickets"]) == sorted(set(opened)) and len(set(opened)) == 47
    assert {a.json()["subject"] for a in fresh} == {f"Burst {n}" for n in range(46)}


async def test_an_inbound_command_with_the_same_channel_message_id_opens_one_ticket(running_platform):
    # (A command with wrong metadata is rejected to the DLQ: see tests/unit/test_intake_service.py. It is not
    # sent here because test_readme_walkthrough.py reads the shared DLQ topic expecting only its own records.)
    external_id, later, customer = unique("crm"), unique("crm-later"), unique("crm-customer")

    def command(channel_message_id: str) -> bytes:
        return json.dumps({
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "crm", "type": "support.ticket.submit.v1",
            "subject": customer, "correlationid": channel_message_id,
            "data": {"channel": "social", "customer": {"id": customer}, "subject": "Post", "body": "Your app crashes",
                     "external_id": channel_message_id, "metadata": {"network": "x", "handle": "@crm"}},
        }).encode()

    # The same message resent with new event ids, then a later one on the same partition: once intake has
    # opened the later one's ticket, it has handled both copies before it.
    for value in (command(external_id), command(external_id), command(later)):
        await running_platform.publish(topics.INBOUND, value, key=customer.encode())

    async def tickets_once_the_later_one_is_open() -> list[dict]:
        async with running_platform.client("intake") as intake:
            listed = (await intake.get("/v1/tickets", params={"customer_id": customer})).json()["tickets"]
        return listed if any(t["external_id"] == later for t in listed) else []

    tickets = await eventually(tickets_once_the_later_one_is_open)
    assert sorted(t["external_id"] for t in tickets) == sorted([external_id, later])
    assert {t["channel"] for t in tickets} == {"social"}


def routing_event(kind: str, ticket_id: str, agent_id: str) -> bytes:
    at = {"assigned": "assigned_at", "unassigned": "unassigned_at"}[kind]
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "switchboard/routing",
                       "type": f"support.ticket.{kind}.v1", "subject": ticket_id, "correlationid": ticket_id,
                       "data": {"ticket_id": ticket_id, "agent_id": agent_id, "reason": "test",
                                f"{at}": "2026-11-24T10:00:00Z"}}).encode()


async def test_assignment_and_unassignment_from_routing_are_projected_on_the_ticket(running_platform):
    ticket = await running_platform.submit_ticket(required_skills=[unique("nobody-has-it")])
    agent = unique("una")
    await running_platform.publish(topics.ROUTING, routing_event("assigned", ticket["id"], agent), key=ticket["id"].encode())
    assert await running_platform.wait_for_assignee(ticket["id"], timeout=60) == agent

    stale = routing_event("unassigned", ticket["id"], "someone-else")
    await running_platform.publish(topics.ROUTING, stale, key=ticket["id"].encode())
    await running_platform.publish(topics.ROUTING, routing_event("unassigned", ticket["id"], agent), key=ticket["id"].encode())

    async with running_platform.client("intake") as intake:
        async with asyncio.timeout(60):
            while (seen := (await intake.get(f"/v1/tickets/{ticket['id']}")).json())["assignee_id"] is not None:
                await asyncio.sleep(0.2)
    assert seen["status"] == "open", "unassignment keeps the status"


def csat_link(platform, ticket_id: str, score: int, expires: int, key: str | None = None) -> str:
    """A link as notify mails it."""
    key = key or platform.platform.service_environment("intake")["CSAT_SIGNING_KEY"]
    return f"/v1/tickets/{ticket_id}/csat?score={score}&expires={expires}&signature={csat_signature(key, ticket_id, expires)}"


async def test_csat_links_show_a_form_and_only_posting_it_rates_and_a_later_rating_replaces_it(running_platform):
    ticket = await running_platform.submit_ticket()
    later = int(time.time()) + 3600
    links = {score: csat_link(running_platform, ticket["id"], score, later) for score in range(1, 6)}
    async with running_platform.client("intake") as browser:
        browser.headers.pop("Authorization")  # the signature authenticates, not an API key
        browser.headers["Accept"] = "text/html,*/*;q=0.8"

        async def rate_on_the_page(link: str, **fields: str) -> httpx.Response:
            """The customer follows `link` and sends its form with `fields` changed."""
            form = HtmlForm.of((await browser.get(link)).text)
            return await browser.post(urljoin(link, form.action), data={**form.fields, **fields})

        too_early = await rate_on_the_page(links[4])
        async with running_platform.client("intake") as staff:
            await staff.patch(f"/v1/tickets/{ticket['id']}", json={"status": "solved"})
        scanned = [await browser.get(link, headers={"Accept": "*/*"}) for link in links.values()]  # a mail scanner
        forged = await browser.get(csat_link(running_platform, ticket["id"], 5, later, key="guess"))
        expired = await browser.get(csat_link(running_platform, ticket["id"], 5, int(time.time()) - 1))
        bad_score = await browser.get(csat_link(running_platform, ticket["id"], 9, later))
        shown = HtmlForm.of((await browser.get(links[2])).text)
        first = await rate_on_the_page(links[2], comment="Slow\r\nbut kind")
        changed = await browser.post(links[2].replace("score=2&", ""), json={"score": 5})

    assert too_early.status_code == 409 and "only a solved ticket can be rated" in too_early.text
    assert {(page.status_code, page.headers["content-type"]) for page in scanned} == {(200, "text/html; charset=utf-8")}
    assert shown.method == "post" and shown.fields == {"score": "2", "comment": ""} and not shown.fetches
    # A browser is told why in a page, not in JSON.
    assert forged.status_code == 403 and "the survey link&#x27;s signature is not valid" in forged.text
    assert expired.status_code == 403 and "This survey link cannot be used." in expired.text
    assert "the survey link has expired" in expired.text and expired.headers["content-type"] == "text/html; charset=utf-8"
    assert "<form" not in forged.text + expired.text
    assert bad_score.status_code == 422
    assert first.status_code == 200 and "You answered 2 out of 5." in first.text, first.text
    assert changed.status_code == 200 and changed.json()["score"] == 5
    async with running_platform.client("intake") as intake:
        assert (await intake.get(f"/v1/tickets/{ticket['id']}")).json()["csat"]["score"] == 5

    def ratings(events: list[dict]) -> list[dict]:
        return [e["data"] for e in events if e["type"] == CSAT_RECEIVED and e["subject"] == ticket["id"]]

    # The watermark: the last POST's rating. One ticket's events keep their order, so a rating the scanner's
    # fetches (or the page views) had recorded would be among those before it.
    events = await running_platform.events(topics.TICKETS, until=lambda seen: 5 in [r["score"] for r in ratings(seen)])
    assert [(r["score"], r["comment"]) for r in ratings(events)] == [(2, "Slow\nbut kind"), (5, None)]


async def test_the_ticket_view_shows_its_sla_clocks_projected_from_sla(running_platform):
    ticket = await running_platform.submit_ticket(required_skills=[unique("unstaffed")])  # stays unassigned
    async with running_platform.client("intake") as intake:
        async with asyncio.timeout(60):
            while "first_reply" not in (seen := (await intake.get(f"/v1/tickets/{ticket['id']}")).json())["sla"]:
                await asyncio.sleep(0.3)
    clock = seen["sla"]["first_reply"]
    assert clock["state"] == "running" and clock["due_at"] > ticket["created_at"] and clock["breached"] is False
    assert seen["version"] == ticket["version"], "a projection is not an edit: If-Match versions stay valid"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/tickets", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/v1/tickets", {"json": {"channel": "web", "customer": {}, "subject": "s", "body": "b"}}),
        ("POST", "/v1/tickets", {"json": {"channel": "chat", "customer": {"id": "c"}, "subject": "s", "body": "b",
                                          "metadata": {"widget": ["not", "a", "string"]}}}),
        ("POST", "/v1/tickets", {"json": {"channel": "web", "customer": {"id": "c"}, "subject": "s", "body": "b",
                                          "tags": [""], "category": "Not A Slug"}}),
        ("GET", "/v1/tickets", {"params": {"limit": 0}}),
        ("GET", "/v1/tickets", {"params": {"cursor": "%%%"}}),
        ("GET", "/v1/tickets", {"params": {"cursor": "/w"}}),
        ("PATCH", "/v1/tickets/TKT-nope", {"json": {"status": "open"}}),
        ("PATCH", "/v1/tickets/TKT-nope", {"json": {}}),
        ("PATCH", "/v1/tickets/TKT-nope", {"json": {"status": "open"}, "headers": {"If-Match": "W/\"x\""}}),
        ("POST", "/v1/tickets/TKT-nope/messages", {"json": {"author_type": "bot", "body": ""}}),
        ("POST", "/v1/tickets/TKT-nope/messages", {"json": {"author_type": "agent", "body": "hi"}}),
        ("GET", "/v1/tickets/TKT-nope/messages", {}),
        ("GET", "/v1/customers/nobody", {}),
        ("GET", "/v1/tickets/TKT-nope/csat", {"params": {"score": 3, "expires": 1, "signature": "zz"}}),
        ("GET", "/v1/tickets/TKT-nope/csat", {"params": {"score": 3, "expires": 9999999999, "signature": "0" * 64}}),
        ("POST", "/v1/inbound/email", {"content": b"\xff\xfe garbage", "headers": {"X-Switchboard-Timestamp": "1"}}),
    ],
)
async def test_bad_input_gets_a_4xx_that_says_what_is_wrong(running_platform, method, path, kwargs):
    async with running_platform.client("intake") as intake:
        response = await intake.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body.get("message") or body.get("detail")

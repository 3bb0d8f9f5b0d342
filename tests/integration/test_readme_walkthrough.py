"""The README walk-through, end to end, against the platform as `switchboard up` starts it."""

import json
import uuid

import pytest

from shared import topics
from tests.support import eventually, unique

pytestmark = pytest.mark.integration



async def test_a_new_ticket_goes_to_an_available_agent_with_the_skills(running_platform):
    skill = unique("billing")
    await running_platform.put_agent(unique("wrong-skills"), skills={unique("other"): 5}, capacity=5)
    ada = unique("ada")
    await running_platform.put_agent(ada, skills={skill: 3}, capacity=2)

    ticket = await running_platform.submit_ticket(required_skills=[skill], priority="high")

    assert ticket["status"] == "new" and ticket["priority"] == "high"
    assert await running_platform.wait_for_assignee(ticket["id"]) == ada
    async with running_platform.client("intake") as intake:
        assert (await intake.get(f"/v1/tickets/{ticket['id']}")).json()["status"] == "open"


async def test_a_ticket_waits_in_the_queue_until_a_matching_agent_becomes_available(running_platform):
    skill = unique("legal")
    agent = unique("lin")
    await running_platform.put_agent(agent, skills={skill: 2}, capacity=1, status="away")
    ticket = await running_platform.submit_ticket(required_skills=[skill])

    assert await eventually(lambda: routing_states(running_platform, [ticket])) == ["waiting"]
    async with running_platform.client("intake") as intake:
        assert (await intake.get(f"/v1/tickets/{ticket['id']}")).json()["assignee_id"] is None

    await running_platform.put_agent(agent, skills={skill: 2}, capacity=1, status="available")
    assert await running_platform.wait_for_assignee(ticket["id"]) == agent


async def test_an_agent_is_never_given_more_tickets_than_their_capacity(running_platform):
    skill = unique("returns")
    agent = unique("max")
    await running_platform.put_agent(agent, skills={skill: 1}, capacity=2)
    tickets = [await running_platform.submit_ticket(required_skills=[skill]) for _ in range(3)]

    async def routing_placed_all() -> list[str]:
        states = await routing_states(running_platform, tickets) or []
        return states if "waiting" in states and states.count("assigned") == 2 else []

    async def intake_saw_both_assignments() -> list:
        async with running_platform.client("intake") as intake:
            assignees = [(await intake.get(f"/v1/tickets/{t['id']}")).json()["assignee_id"] for t in tickets]
        return assignees if assignees.count(agent) == 2 else []

    await eventually(routing_placed_all)  # routing's decision for each: two assigned, one left waiting
    assignees = await eventually(intake_saw_both_assignments)
    async with running_platform.client("routing") as routing:
        state = (await routing.get(f"/v1/agents/{agent}")).json()
    assert assignees.count(agent) == 2 and assignees.count(None) == 1
    assert (state["load"], state["free"]) == (2, 0)


async def routing_states(running_platform, tickets: list[dict]) -> list[str] | None:
    """Routing's state of each ticket (`waiting`, `assigned`…), sorted; None until routing has them all."""
    async with running_platform.client("routing") as routing:
        views = [await routing.get(f"/v1/tickets/{t['id']}") for t in tickets]
    return sorted(view.json()["state"] for view in views) if all(v.status_code == 200 for v in views) else None


async def test_every_new_ticket_gets_a_first_reply_clock_and_its_event(running_platform):
    ticket = await running_platform.submit_ticket()

    def first_reply_started(event: dict) -> bool:
        return event["subject"] == ticket["id"] and event["data"]["metric"] == "first_reply"

    started = await running_platform.events(topics.SLA, until=lambda events: any(map(first_reply_started, events)))
    async with running_platform.client("sla") as sla:
        response = await sla.get(f"/v1/tickets/{ticket['id']}/sla")

    assert response.status_code == 200
    [clock] = [c for c in response.json()["clocks"] if c["metric"] == "first_reply"]
    assert clock["state"] == "running"
    assert clock["target_seconds"] > 0 and clock["due_at"] > ticket["created_at"]
    [event] = [e for e in started if first_reply_started(e)]
    assert event["type"] == "support.sla.clock_started.v1"
    assert event["data"]["due_at"].startswith(clock["due_at"][:19])


async def test_the_customer_gets_exactly_one_acknowledgement_carrying_the_ticket_id(running_platform):
    address = f"{unique('cust')}@example.com"
    ticket = await running_platform.submit_ticket(customer={"id": unique("c"), "email": address, "name": "Bea"})

    async def acknowledgements_once_recorded_as_sent() -> list[dict]:
        """Notify records a send after the mail server took it, and never sends a recorded one again."""
        async with running_platform.client("notify") as notify:
            found = (await notify.get("/v1/notifications", params={"ticket_id": ticket["id"]})).json()
        acknowledgements = [n for n in found["notifications"] if n["kind"] == "acknowledgement"]
        return acknowledgements if acknowledgements and all(n["state"] == "sent" for n in acknowledgements) else []

    assert len(await eventually(acknowledgements_once_recorded_as_sent, timeout=20)) == 1
    mine = [m for m in running_platform.mail() if m["To"] == address]
    assert len(mine) == 1
    assert ticket["id"] in mine[0]["Subject"]
    assert ticket["id"] in mine[0].get_body(("plain",)).get_content()


async def test_the_same_idempotency_key_gives_one_ticket_and_the_same_answer(running_platform):
    key = {"Idempotency-Key": unique("key")}
    body = {"channel": "email", "customer": {"email": "cy@example.com"}, "subject": "Hi", "body": "Hello"}
    async with running_platform.client("intake") as intake:
        first = await intake.post("/v1/tickets", json=body, headers=key)
        second = await intake.post("/v1/tickets", json=body, headers=key)
        different = await intake.post("/v1/tickets", json={**body, "subject": "Other"}, headers=key)

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert different.status_code == 409 and "Idempotency-Key" in different.json()["detail"]


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [("intake", "POST", "/v1/tickets"), ("routing", "PUT", "/v1/agents/a1"), ("sla", "GET", "/v1/tickets/x/sla")],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-the-key", "Basic dev-key"])
async def test_requests_without_a_valid_api_key_get_401(running_platform, service, method, path, authorization):
    async with running_platform.client(service) as client:
        headers = {"Authorization": authorization} if authorization else {}
        client.headers.pop("Authorization")
        response = await client.request(method, path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_malformed_tickets_get_422_saying_what_is_wrong(running_platform):
    async with running_platform.client("intake") as intake:
        response = await intake.post(
            "/v1/tickets",
            json={"channel": "fax", "customer": {"email": "not-an-address"}, "body": "x", "priority": "asap"},
        )
    assert response.status_code == 422
    message = response.json()["message"]
    for problem in ("body.channel", "body.customer.email", "body.subject: Field required", "body.priority"):
        assert problem in message


async def test_bad_agent_profiles_get_422(running_platform):
    async with running_platform.client("routing") as routing:
        negative = await routing.put("/v1/agents/a1", json={"name": "A", "capacity": -1})
        bad_level = await routing.put("/v1/agents/a1", json={"name": "A", "capacity": 1, "skills": {"billing": 9}})
    assert negative.status_code == 422 and "capacity" in negative.json()["message"]
    assert bad_level.status_code == 422 and "skills.billing" in bad_level.json()["message"]


async def test_unknown_ticket_gets_404(running_platform):
    async with running_platform.client("intake") as intake:
        response = await intake.get("/v1/tickets/TKT-nope")
    assert response.status_code == 404 and "TKT-nope" in response.json()["detail"]


async def test_a_ticket_submit_command_on_the_inbound_topic_opens_a_ticket(running_platform):
    customer_id = f"shop-{uuid.uuid4().hex[:8]}"

    def command(command_id: str, subject: str) -> bytes:
        return json.dumps({
            "specversion": "1.0",
            "id": command_id,
            "source": "webshop/checkout",
            "type": "support.ticket.submit.v1",
            "subject": "order-1042",
            "correlationid": "order-1042-help",
            "data": {"channel": "api", "customer": {"id": customer_id, "email": "dee@example.com"},
                     "subject": subject, "body": "Where is my parcel?"},
        }).encode()

    command_id, watermark_id = str(uuid.uuid4()), str(uuid.uuid4())
    await running_platform.publish(topics.INBOUND, command(command_id, "Parcel lost"), key=b"order-1042")
    await running_platform.publish(topics.INBOUND, command(command_id, "Parcel lost"), key=b"order-1042")  # redelivered
    # Same key, same partition: once this one's ticket exists, the redelivery has been handled too.
    await running_platform.publish(topics.INBOUND, command(watermark_id, "Parcel found"), key=b"order-1042")

    created = await running_platform.events(
        topics.TICKETS, until=lambda events: {command_id, watermark_id} <= {e.get("causationid") for e in events}
    )
    async with running_platform.client("intake") as intake:
        tickets = (await intake.get("/v1/tickets", params={"customer_id": customer_id})).json()["tickets"]

    assert sorted(ticket["subject"] for ticket in tickets) == ["Parcel found", "Parcel lost"], (
        "the same command delivered twice must open one ticket"
    )
    mine = [e for e in created if e["causationid"] == command_id and e["type"] == "support.ticket.created.v1"]
    assert len(mine) == 1 and mine[0]["correlationid"] == "order-1042-help"
    lost = next(ticket for ticket in tickets if ticket["subject"] == "Parcel lost")
    assert lost["id"] == mine[0]["data"]["ticket_id"] and lost["channel"] == "api"


async def test_an_invalid_inbound_message_is_dead_lettered_with_its_reason_and_the_rest_keep_flowing(
    running_platform,
):
    poison = json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "crm", "type":
                         "support.ticket.submit.v1", "subject": "x", "correlationid": "c",
                         "data": {"channel": "pigeon", "subject": "s", "body": "b", "customer": {"id": "c"}}})
    good_id = str(uuid.uuid4())
    good = json.dumps({"specversion": "1.0", "id": good_id, "source": "crm", "type": "support.ticket.submit.v1",
                       "subject": "y", "correlationid": "c2",
                       "data": {"channel": "phone", "subject": "Call back", "body": "Please call",
                                "customer": {"id": "crm-9"}}})
    await running_platform.publish(topics.INBOUND, b"{not json", key=b"y")
    await running_platform.publish(topics.INBOUND, poison.encode(), key=b"y")
    await running_platform.publish(topics.INBOUND, good.encode(), key=b"y")

    mine = {b"{not json", poison.encode()}  # the suite's other tests park records on this topic too
    dead = await running_platform.read_topic(
        topics.dead_letter(topics.INBOUND), until=lambda records: mine <= {record.value for record in records}
    )
    created = await running_platform.events(
        topics.TICKETS, until=lambda events: any(e.get("causationid") == good_id for e in events)
    )

    reasons = {record.value: dict(record.headers) for record in dead if record.value in mine}
    assert reasons[b"{not json"]["dlq-error"].startswith(b"invalid event")
    assert b"data.channel" in reasons[poison.encode()]["dlq-error"]
    assert reasons[poison.encode()]["dlq-consumer-group"] == b"switchboard-intake"
    assert reasons[poison.encode()]["dlq-attempts"] == b"1"
    assert any(e.get("causationid") == good_id for e in created)


@pytest.mark.parametrize("service", ["intake", "routing", "sla", "notify"])
async def test_each_service_reports_health_metrics_and_its_event_contract(running_platform, service):
    async with running_platform.client(service) as client:
        live, ready = await client.get("/health/live"), await client.get("/health/ready")
        metrics = await client.get("/metrics")
        asyncapi = await client.get("/docs/asyncapi.json")
        asyncapi_page = await client.get("/docs/asyncapi")

    assert live.status_code == 200
    assert ready.status_code == 200 and ready.json()["checks"] == {"mongodb": True, "kafka": True}
    assert "switchboard_outbox_lag_seconds" in metrics.text
    assert 'switchboard_mongodb_commands_total{collection="outbox",command="find"}' in metrics.text, "the relay's reads"
    assert "faststream_received_messages_total" in metrics.text or service == "notify"
    assert asyncapi.json()["info"]["title"] == f"Switchboard {service}"
    assert asyncapi_page.status_code == 200 and "asyncapi" in asyncapi_page.text.lower()

"""Switchboard as an outside integrator meets it: the CloudEvents SDK and confluent-kafka, in either content
mode, and the envelope rules of the CloudEvents spec.

The guide's own examples (docs/integrating/producer.py and consumer.py) are what the first test runs, so
they cannot rot. Everything runs on the suite's platform.
"""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from cloudevents.core.bindings import kafka
from cloudevents.core.v1.event import CloudEvent

from shared import topics
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "integrating"


async def run_example(script: str, *args: str, timeout: float = 170) -> str:
    """Runs one of the guide's examples as an integrator would; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, (
        f"{script} exited {process.returncode}; it printed:\n{out.decode()[-2000:]}\nand said: {err.decode()[-2000:]}"
    )
    return out.decode()


async def tickets_of(running_platform, customer_id: str) -> list[dict]:
    async with running_platform.client("intake") as intake:
        return (await intake.get("/v1/tickets", params={"customer_id": customer_id})).json()["tickets"]


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_a_ticket_submitted_with_the_sdk_is_created_assigned_and_acknowledged(running_platform, mode):
    skill = unique("refunds")
    agent = unique("ada")
    await running_platform.put_agent(agent, skills={skill: 3}, capacity=2)
    customer, email = unique("cust"), f"{unique('ann')}@example.com"
    event_id = unique("crm-case")  # not a UUID: CloudEvents allows any non-empty string

    printed = await run_example(
        "producer.py", "--bootstrap-servers", running_platform.bootstrap, "--mode", mode, "--id", event_id,
        "--customer-id", customer, "--email", email, "--skill", skill,
    )
    followed = await run_example(
        "consumer.py", "--bootstrap-servers", running_platform.bootstrap, "--group", unique("crm"),
        "--correlation-id", event_id, "--until", "support.ticket.assigned.v1",
        "--until", "support.notification.sent.v1", "--timeout", "150",  # a loaded 2-core CI machine
    )

    assert printed.strip() == event_id
    seen = [json.loads(line) for line in followed.splitlines()]
    [created] = [event for event in seen if event["type"] == "support.ticket.created.v1"]
    ticket_id = created["data"]["ticket_id"]
    assert created["data"]["customer"]["id"] == customer and created["data"]["required_skills"] == [skill]
    assert any(e["type"] == "support.ticket.assigned.v1" and e["data"]["agent_id"] == agent for e in seen)
    assert any(
        e["type"] == "support.notification.sent.v1" and e["data"]["kind"] == "acknowledgement" for e in seen
    )
    assert await running_platform.wait_for_assignee(ticket_id) == agent
    assert [t["id"] for t in await tickets_of(running_platform, customer)] == [ticket_id]
    assert [m for m in running_platform.mail() if m["To"] == email and ticket_id in m["Subject"]]


def submission(*, source: str, event_id: str, customer: str, subject: str, **attributes) -> CloudEvent:
    return CloudEvent(
        {"type": "support.ticket.submit.v1", "source": source, "id": event_id, "subject": customer, **attributes},
        {"channel": "api", "customer": {"id": customer}, "subject": subject, "body": "Where is my parcel?"},
    )


async def send(running_platform, event: CloudEvent, *, mode: str, leave_out: str | None = None) -> None:
    message = kafka.to_binary_event(event) if mode == "binary" else kafka.to_structured_event(event)
    value, headers = message.value, list(message.headers.items())
    if leave_out and mode == "binary":
        headers = [(name, raw) for name, raw in headers if name != f"ce_{leave_out}"]
    elif leave_out:
        document = json.loads(value)
        del document[leave_out]
        value = json.dumps(document).encode()
    await running_platform.publish(topics.INBOUND, value, key=event.get_subject().encode(), headers=headers)


async def test_the_same_source_and_id_is_one_ticket_and_the_same_id_from_another_source_another(running_platform):
    customer = unique("shop")
    await send(running_platform, submission(source="webshop/eu", event_id="42", customer=customer, subject="EU"),
               mode="binary")
    await send(running_platform, submission(source="webshop/eu", event_id="42", customer=customer, subject="EU"),
               mode="structured")  # the same event again, sent the other way
    await send(running_platform, submission(source="webshop/us", event_id="42", customer=customer, subject="US"),
               mode="binary")
    # Same key, same partition: once this one's ticket exists, everything before it has been handled.
    await send(running_platform, submission(source="webshop/eu", event_id="43", customer=customer, subject="mark"),
               mode="structured")

    async def tickets_once_the_mark_is_in() -> list[dict] | None:
        found = await tickets_of(running_platform, customer)
        return found if any(ticket["subject"] == "mark" for ticket in found) else None

    tickets = await eventually(tickets_once_the_mark_is_in, timeout=30)
    assert sorted(ticket["subject"] for ticket in tickets) == ["EU", "US", "mark"]


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_an_event_missing_a_required_attribute_is_dead_lettered_naming_it(running_platform, mode):
    key = unique("incomplete")
    for attribute in ("specversion", "id", "source", "type"):
        event = submission(source="crm/acme", event_id=unique("e"), customer=key, subject=f"without {attribute}")
        await send(running_platform, event, mode=mode, leave_out=attribute)

    await running_platform.read_topic(
        topics.dead_letter(topics.INBOUND), until=lambda records: sum(r.key == key.encode() for r in records) == 4
    )
    listed = await run_example(
        "dead_letters.py", topics.INBOUND, "--bootstrap-servers", running_platform.bootstrap, "--key", key
    )

    dead = [json.loads(line) for line in listed.splitlines()]
    assert {(letter["key"], letter["consumer_group"]) for letter in dead} == {(key, "switchboard-intake")}
    reasons = [letter["reason"] for letter in dead]
    if mode == "binary":
        assert reasons == [
            f"invalid event: binary mode: missing required attribute header ce_{attribute}"
            for attribute in ("specversion", "id", "source", "type")
        ]
    else:
        assert reasons == [
            f"invalid event: structured mode: {attribute}: Field required" for attribute in ("specversion", "id", "source", "type")
        ]
    assert await tickets_of(running_platform, key) == [], "nothing is made up for a missing attribute"

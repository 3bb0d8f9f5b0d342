"""The event contract as outside systems see it: CloudEvents fields, typed payloads, clear rejections."""

import json
import uuid
from datetime import UTC, datetime

import pytest

from shared.envelope import new_event
from shared.events import InvalidEvent, TicketAssigned, TicketSubmit, UnknownEventType, parse_event
from shared.logging import correlated

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def assigned(ticket_id: str = "TKT-1") -> TicketAssigned:
    return TicketAssigned(ticket_id=ticket_id, agent_id="ada", reason="skills match", assigned_at=NOW)


def test_an_event_carries_the_cloudevents_attributes_and_round_trips():
    event = new_event(assigned(), source="switchboard/routing", subject="TKT-1")
    document = json.loads(event.to_json())

    assert document["specversion"] == "1.0"
    assert document["type"] == "support.ticket.assigned.v1"
    assert document["source"] == "switchboard/routing"
    assert document["subject"] == "TKT-1"
    assert document["datacontenttype"] == "application/json"
    assert document["time"].endswith("Z")
    assert uuid.UUID(document["id"])
    assert parse_event(event.to_json()) == event


def test_an_event_caused_by_another_keeps_its_correlation_and_names_its_cause():
    cause = new_event(assigned(), source="switchboard/routing", subject="TKT-1")
    effect = new_event(assigned(), source="switchboard/intake", subject="TKT-1", cause=cause)

    assert effect.correlationid == cause.correlationid == str(cause.id)
    assert effect.causationid == str(cause.id)
    assert effect.id != cause.id


def test_an_event_without_a_cause_takes_the_correlation_id_in_context_unless_given_one():
    cause = new_event(assigned(), source="switchboard/routing", subject="TKT-1")
    with correlated("order-1042-help"):  # what an HTTP request's X-Correlation-Id sets
        from_request = new_event(assigned(), source="switchboard/intake", subject="TKT-1")
        given = new_event(assigned(), source="switchboard/notify", subject="TKT-1", correlation_id="c-7", causation_id="e-7")
        caused = new_event(assigned(), source="switchboard/sla", subject="TKT-1", cause=cause)
    alone = new_event(assigned(), source="switchboard/intake", subject="TKT-1")

    assert (from_request.correlationid, from_request.causationid) == ("order-1042-help", None)
    assert (given.correlationid, given.causationid) == ("c-7", "e-7")
    assert caused.correlationid == cause.correlationid
    assert alone.correlationid == str(alone.id), "outside any context, an event starts its own story"


def test_consumers_ignore_fields_they_do_not_know_yet():
    document = json.loads(new_event(assigned(), source="s", subject="TKT-1").to_json())
    document["newattribute"] = "x"
    document["data"]["added_in_a_later_release"] = 1

    assert parse_event(json.dumps(document).encode()).data == assigned()


def test_an_unknown_type_is_told_apart_from_an_invalid_event():
    document = json.loads(new_event(assigned(), source="s", subject="TKT-1").to_json())
    document["type"] = "support.ticket.assigned.v2"

    with pytest.raises(UnknownEventType):
        parse_event(json.dumps(document).encode())


def test_an_unknown_type_in_a_broken_envelope_is_invalid_not_skipped():
    with pytest.raises(InvalidEvent, match="^id: Field required$"):
        parse_event(json.dumps(submitted_document(type="support.ticket.submit.v2", id=None)).encode())


def submitted_document(**attributes) -> dict:
    """A whole `ticket.submit` as an outside system writes it; `None` leaves an attribute out."""
    document = {
        "specversion": "1.0", "id": "order-1042", "source": "webshop/checkout", "type": "support.ticket.submit.v1",
        "subject": "cust-1042", "data": {"channel": "api", "customer": {"id": "cust-1042"}, "subject": "s", "body": "b"},
    }
    document.update(attributes)
    return {name: value for name, value in document.items() if value is not None}


@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type"])
def test_each_attribute_cloudevents_requires_is_refused_when_missing_and_named(attribute):
    with pytest.raises(InvalidEvent) as refused:
        parse_event(json.dumps(submitted_document(**{attribute: None})).encode())

    assert str(refused.value) == f"{attribute}: Field required", "nothing is made up for it, and only it is named"


def test_any_non_empty_string_is_an_id_and_the_correlation_defaults_to_it():
    event = parse_event(json.dumps(submitted_document(id="crm-case-88213")).encode())

    assert (event.id, event.correlationid) == ("crm-case-88213", "crm-case-88213")
    with pytest.raises(InvalidEvent, match="^id: String should have at least 1 character$"):
        parse_event(json.dumps(submitted_document(id="")).encode())


def test_a_correlation_id_given_is_kept():
    assert parse_event(json.dumps(submitted_document(correlationid="order-1042-help")).encode()).correlationid == (
        "order-1042-help"
    )


def test_only_specversion_1_0_is_read():
    with pytest.raises(InvalidEvent, match="specversion"):
        parse_event(json.dumps(submitted_document(specversion="0.3")).encode())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"{not json", "message"),
        (b'{"specversion": "1.0"}', "source: Field required"),
    ],
)
def test_a_message_that_is_not_an_event_is_invalid_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(raw)


def test_a_payload_that_breaks_its_schema_says_which_field_is_wrong():
    document = json.loads(
        new_event(
            TicketSubmit(channel="web", customer={"id": "c1"}, subject="s", body="b"), source="crm", subject="c1"
        ).to_json()
    )
    document["data"]["customer"] = {"email": "nope"}

    with pytest.raises(InvalidEvent, match=r"support.ticket.submit.v1: data.customer.email"):
        parse_event(json.dumps(document).encode())


@pytest.mark.parametrize(
    "customer", [{"name": "no way to reach them"}, {}],
)
def test_a_customer_needs_an_id_or_an_email(customer):
    with pytest.raises(ValueError, match="a customer needs an id or an email"):
        TicketSubmit(channel="web", customer=customer, subject="s", body="b")


@pytest.mark.parametrize("skill", ["Billing", "bill ing", "", "x" * 51])
def test_required_skills_must_be_simple_names(skill):
    with pytest.raises(ValueError):
        TicketSubmit(channel="web", customer={"id": "c"}, subject="s", body="b", required_skills=[skill])

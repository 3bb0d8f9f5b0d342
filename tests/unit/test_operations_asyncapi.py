"""The committed AsyncAPI documents (deploy/asyncapi/) are what the code generates, and complete.

The drift check regenerates each service's document from its code, in-process and without any
broker or database (the way `make asyncapi` does), and compares it with the committed file.
"""

import json

import pytest

from shared import contract, events, topics
from tools.asyncapi_export import SERVICES, document, path_of, render


@pytest.mark.parametrize("service", SERVICES)
def test_the_committed_asyncapi_document_matches_the_code(service):
    committed = path_of(service)
    assert committed.is_file(), f"{committed} is missing: run `make asyncapi` and commit deploy/asyncapi/"
    generated = render(document(service))
    assert committed.read_text() == generated, (
        f"{committed.name} drifted from the code of services/{service}: run `make asyncapi` and commit the result"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_each_document_names_what_the_service_consumes_and_publishes(service):
    spec = json.loads(path_of(service).read_text())
    assert spec["asyncapi"].startswith("3."), spec["asyncapi"]
    sent = {channel["address"] for name, channel in spec["channels"].items() if spec["operations"][name]["action"] == "send"}
    assert sent == set(contract.PUBLISHES[service]), f"{service} documents publishing to {sorted(sent)}"
    for topic, payloads in contract.PUBLISHES[service].items():
        for payload in payloads:
            assert f"{payload.__name__}Event" in spec["components"]["schemas"], (
                f"{service}'s document has no schema for {payload.EVENT_TYPE} on {topic}"
            )
    received = [name for name, operation in spec["operations"].items() if operation["action"] == "receive"]
    for name in received:
        assert spec["channels"][name]["address"] in topics.ALL, f"{service} consumes an unknown topic: {name}"


def test_every_event_type_is_published_by_exactly_one_service_or_comes_from_outside():
    declared = [payload for by_topic in contract.PUBLISHES.values() for types in by_topic.values() for payload in types]
    declared += [payload for types in contract.FROM_OUTSIDE.values() for payload in types]
    every = {
        cls for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, events.Payload) and "EVENT_TYPE" in vars(cls)
    }
    assert len(declared) == len(set(declared)), "an event type is declared twice in shared/contract.py"
    assert set(declared) == every, (
        f"shared/contract.py does not say who publishes {sorted(c.__name__ for c in every - set(declared))}"
    )


def test_event_schemas_fix_the_type_so_tools_can_tell_events_apart():
    schema = contract.event_model(events.TicketCreated).model_json_schema()
    assert schema["properties"]["type"]["const"] == events.TicketCreated.EVENT_TYPE
    assert set(schema["required"]) == {"specversion", "id", "source", "type", "subject", "data"}, (
        "the CloudEvents required attributes, the subject (the Kafka key) and the payload; correlationid defaults to id"
    )
    assert "format" not in schema["properties"]["id"], "CloudEvents allows any non-empty string as an id"

"""Events in Kafka records, in both CloudEvents content modes, as the CloudEvents SDK writes and reads them."""

import json

import pytest
from cloudevents.core.bindings import kafka
from cloudevents.core.v1.event import CloudEvent

from shared.envelope import new_event
from shared.events import InvalidEvent, TicketSubmit, UnknownEventType
from shared.kafka_binding import ContentMode, encode, read_event

SUBMISSION = {"channel": "api", "customer": {"id": "cust-1042"}, "subject": "Parcel lost", "body": "Where is it?"}


def sdk_event(**attributes) -> CloudEvent:
    return CloudEvent(
        {"type": "support.ticket.submit.v1", "source": "webshop/checkout", "id": "order-1042", "subject": "cust-1042",
         "datacontenttype": "application/json", **attributes},
        SUBMISSION,
    )


def headers_of(message: kafka.KafkaMessage) -> list[tuple[str, bytes]]:
    return list(message.headers.items())


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_sdk_event_is_read_in_either_mode(mode):
    message = kafka.to_binary_event(sdk_event()) if mode == "binary" else kafka.to_structured_event(sdk_event())

    event = read_event(message.value, headers_of(message))

    assert (event.id, event.source, event.subject, event.correlationid) == (
        "order-1042", "webshop/checkout", "cust-1042", "order-1042"
    )
    assert event.data == TicketSubmit.model_validate(SUBMISSION)


def test_extensions_travel_as_ce_headers_in_binary_mode():
    message = kafka.to_binary_event(sdk_event(correlationid="order-1042-help", causationid="cart-7"))

    event = read_event(message.value, headers_of(message))

    assert (event.correlationid, event.causationid) == ("order-1042-help", "cart-7")


@pytest.mark.parametrize("mode", list(ContentMode))
def test_what_switchboard_publishes_reads_back_the_same_and_the_sdk_reads_it_too(mode):
    ours = new_event(TicketSubmit.model_validate(SUBMISSION), source="switchboard/test", subject="cust-1042")

    value, headers = encode(ours.to_json(), mode)
    message = kafka.KafkaMessage(headers={name: text.encode() for name, text in headers.items()}, key=None, value=value)

    assert read_event(value, [(name, text.encode()) for name, text in headers.items()]) == ours
    theirs = kafka.from_kafka_event(message)
    assert (theirs.get_id(), theirs.get_type(), theirs.get_data()["subject"]) == (ours.id, ours.type, "Parcel lost")
    if mode is ContentMode.BINARY:
        assert "content-type" in headers and headers["ce_correlationid"] == ours.correlationid
        assert json.loads(value) == json.loads(ours.to_json())["data"]
    else:
        assert headers == {"content-type": "application/cloudevents+json; charset=UTF-8"}


@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type"])
def test_a_binary_event_missing_a_required_attribute_says_binary_mode_and_names_its_header(attribute):
    message = kafka.to_binary_event(sdk_event())
    headers = [(name, value) for name, value in headers_of(message) if name != f"ce_{attribute}"]

    with pytest.raises(InvalidEvent, match=f"^binary mode: missing required attribute header ce_{attribute}$"):
        read_event(message.value, headers)


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (json.dumps(SUBMISSION).encode(), [("content-type", b"application/json")],
         "binary mode (content-type application/json and no ce_ headers): missing required attribute headers "
         "ce_specversion, ce_id, ce_source, ce_type"),
        (b"<xml/>", [("content-type", b"application/xml"), ("ce_specversion", b"1.0"), ("ce_id", b"1"),
                     ("ce_source", b"s"), ("ce_type", b"support.ticket.submit.v1")],
         "binary mode: content-type application/xml: the data must be JSON (application/json)"),
        (b"{not json", [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"),
                        ("ce_type", b"support.ticket.submit.v1"), ("ce_subject", b"x")],
         "binary mode: the value is not JSON data"),
        (None, [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"support.ticket.submit.v1")],
         "binary mode: the record has no value"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_id", b"2"), ("ce_source", b"s"),
                 ("ce_type", b"support.ticket.submit.v1")],
         "binary mode: header ce_id appears more than once"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"s"), ("ce_type", b"support.ticket.submit.v1")],
         "binary mode: header ce_id is not UTF-8"),
        (json.dumps({**SUBMISSION, "channel": "pigeon"}).encode(),
         [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"support.ticket.submit.v1"),
          ("ce_subject", b"x")],
         "binary mode: support.ticket.submit.v1: data.channel"),
        (b"{}", [("content-type", b"application/cloudevents+avro")],
         "structured mode: content-type application/cloudevents+avro is not an event format Switchboard reads"),
        (b'{"specversion": "1.0"}', [("content-type", b"application/cloudevents+json")],
         "structured mode: id: Field required; source: Field required"),
    ],
)
def test_a_record_that_is_no_valid_event_says_which_mode_and_what_is_wrong(value, headers, reason):
    with pytest.raises(InvalidEvent) as refused:
        read_event(value, headers)
    assert str(refused.value).startswith(reason), str(refused.value)


@pytest.mark.parametrize("headers", [[], [("content-type", b"")]], ids=["no headers", "empty content-type"])
def test_a_bare_json_event_without_ce_headers_is_read_as_structured(headers):
    """What producers were told to send before binary mode was read, and what dead letters parked before
    they kept their headers carry (FastStream wrote an empty content-type)."""
    ours = new_event(TicketSubmit.model_validate(SUBMISSION), source="crm", subject="cust-1042")

    assert read_event(ours.to_json(), headers) == ours


def test_an_unknown_type_in_binary_mode_is_told_apart_from_an_invalid_event():
    message = kafka.to_binary_event(sdk_event(type="support.ticket.submit.v2"))

    with pytest.raises(UnknownEventType):
        read_event(message.value, headers_of(message))

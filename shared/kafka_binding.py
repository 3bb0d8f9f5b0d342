"""How an event rides in a Kafka record: the CloudEvents Kafka protocol binding, in both content modes.

- structured: the record's value is the whole event in the JSON event format, and its `content-type`
  header says `application/cloudevents+json`;
- binary: the value is the event's `data` alone, its media type in the `content-type` header, and
  every other attribute in a `ce_<attribute>` header (UTF-8), as several SDKs send by default.

A receiver tells them apart as the binding says: a `content-type` starting with
`application/cloudevents` is structured, anything else binary. One exception keeps older
producers working: a record with neither a `content-type` nor any `ce_` header is read as
structured, since a bare JSON event is what they were told to send.
"""

import json
from collections.abc import Sequence
from enum import StrEnum

from shared.envelope import Envelope
from shared.events import InvalidEvent, parse_event

Headers = Sequence[tuple[str, bytes | None]]
"""A Kafka record's headers as the clients give them: (name, value) pairs, names repeatable."""


class ContentMode(StrEnum):
    STRUCTURED = "structured"
    BINARY = "binary"


CONTENT_TYPE = "content-type"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
ATTRIBUTE_HEADER_PREFIX = "ce_"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
JSON_DATA = "application/json"


def read_event(value: bytes | None, headers: Headers) -> Envelope:
    """The event a record carries, in either mode. `InvalidEvent` names the mode and what is wrong with
    the record in its terms (a binary event's attributes are its `ce_` headers); an event of a type
    nobody knows raises `UnknownEventType`."""
    content_type = _content_type(headers)
    if content_type.lower().startswith("application/cloudevents"):
        if _media_type(content_type) != "application/cloudevents+json":
            raise InvalidEvent(
                f"structured mode: content-type {content_type} is not an event format Switchboard reads "
                "(application/cloudevents+json)"
            )
        return _structured(value)
    if content_type or any(name.lower().startswith(ATTRIBUTE_HEADER_PREFIX) for name, _ in headers):
        return _binary(value, headers, content_type)
    return _structured(value)


def encode(structured: bytes, mode: ContentMode) -> tuple[bytes, dict[str, str]]:
    """The value and headers of a record carrying `structured` (an event in the JSON format) in `mode`."""
    if mode is ContentMode.STRUCTURED:
        return structured, {CONTENT_TYPE: STRUCTURED_CONTENT_TYPE}
    attributes = json.loads(structured)
    data = attributes.pop("data")
    headers = {CONTENT_TYPE: attributes.pop("datacontenttype", None) or JSON_DATA}
    headers.update(
        (ATTRIBUTE_HEADER_PREFIX + name, str(value)) for name, value in attributes.items() if value is not None
    )
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), headers


def _structured(value: bytes | None) -> Envelope:
    try:
        return parse_event(value)
    except InvalidEvent as invalid:
        raise InvalidEvent(f"structured mode: {invalid}") from invalid


def _binary(value: bytes | None, headers: Headers, content_type: str) -> Envelope:
    attributes: dict[str, str] = {}
    for name, raw in headers:
        attribute = name.lower().removeprefix(ATTRIBUTE_HEADER_PREFIX)
        if attribute == name.lower() or attribute == "data":  # not an attribute; `data` is the value
            continue
        if attribute in attributes:
            raise InvalidEvent(f"binary mode: header {name} appears more than once")
        try:
            attributes[attribute] = (raw or b"").decode()
        except UnicodeDecodeError:
            raise InvalidEvent(f"binary mode: header {name} is not UTF-8") from None
    missing = [ATTRIBUTE_HEADER_PREFIX + attribute for attribute in REQUIRED_ATTRIBUTES if attribute not in attributes]
    if missing:
        mode = f"binary mode (content-type {content_type} and no ce_ headers)" if not attributes else "binary mode"
        raise InvalidEvent(f"{mode}: missing required attribute header{'s' * (len(missing) > 1)} {', '.join(missing)}")
    if content_type and not _is_json(content_type):
        raise InvalidEvent(f"binary mode: content-type {content_type}: the data must be JSON ({JSON_DATA})")
    if not value:
        raise InvalidEvent("binary mode: the record has no value, but the event's data is required")
    try:
        data = json.loads(value)
    except ValueError as error:
        raise InvalidEvent(f"binary mode: the value is not JSON data: {error}") from None
    document = {**attributes, "data": data}
    if content_type:
        document["datacontenttype"] = content_type
    try:
        return parse_event(json.dumps(document).encode())
    except InvalidEvent as invalid:
        raise InvalidEvent(f"binary mode: {invalid}") from invalid


def _content_type(headers: Headers) -> str:
    """The `content-type` header, "" when absent or empty (as FastStream used to write it on dead letters)."""
    for name, raw in headers:
        if name.lower() == CONTENT_TYPE:
            return (raw or b"").decode(errors="replace").strip()
    return ""


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(content_type: str) -> bool:
    media_type = _media_type(content_type)
    return media_type == JSON_DATA or media_type.endswith("+json")

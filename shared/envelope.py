"""The one envelope every event travels in: CloudEvents 1.0 (how it rides in a Kafka record, in either
content mode, is `shared.kafka_binding`).

Outside systems can read and write Switchboard events with any CloudEvents tooling, so the envelope
asks of them what the CloudEvents spec asks and no more: `specversion`, `id` (any non-empty string,
unique per `source`), `source` and `type`. Nothing a sender left out is made up on input, except
`time`, `datacontenttype` and our `correlationid` extension, which the spec leaves optional. The
`data` payload is typed per event `type` (see `shared.events`); unknown top-level fields are
ignored so that additive changes never break a consumer.
"""

from datetime import datetime
from typing import Generic, TypeVar
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.clock import utc_now
from shared.logging import correlation_id as current_correlation_id

DataT = TypeVar("DataT", bound=BaseModel)

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


class Envelope(BaseModel, Generic[DataT]):
    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: str = Field(pattern=r"^1\.0$")
    id: str = Field(
        min_length=1, max_length=200, description="Unique per `source`: an event seen again with the same `source` "
        "and `id` is a duplicate, and is processed once."
    )
    source: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=200)
    time: AwareDatetime = Field(default_factory=utc_now)
    subject: str = Field(min_length=1, max_length=200, description="The entity's id; also the Kafka key.")
    datacontenttype: str = CONTENT_TYPE
    correlationid: str = Field(
        default_factory=lambda attributes: attributes.get("id"),
        min_length=1,
        max_length=200,
        description="The story this event belongs to; when left out, the event's own `id` (it starts one).",
    )
    causationid: str | None = Field(default=None, max_length=200)
    data: DataT

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def new_event(
    data: BaseModel,
    *,
    source: str,
    subject: str,
    cause: "Envelope | None" = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """A fresh event. Its correlation id is its cause's; else `correlation_id` (for a cause that is no
    longer at hand, such as the event a stored delivery was made for); else the one in context (the
    HTTP request's `X-Correlation-Id`, or the event a consumer is handling); else its own id, which
    starts a new story.

    The payload class names its own CloudEvents `type` in `EVENT_TYPE` (see `shared.events`).
    """
    event_id = str(uuid4())
    correlation = cause.correlationid if cause else correlation_id or current_correlation_id.get() or event_id
    return Envelope[type(data)](
        specversion=SPEC_VERSION,
        id=event_id,
        source=source,
        type=data.EVENT_TYPE,
        time=time or utc_now(),
        subject=subject,
        correlationid=correlation,
        causationid=cause.id if cause else causation_id,
        data=data,
    )

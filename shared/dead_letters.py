"""The one way a record is parked: on `<topic>.dlq`, with why in `dlq-*` headers, which is what
`shared.dlq_replay` reads to send it back and what an operator filters on."""

from collections.abc import Mapping

from faststream.kafka import KafkaBroker

from shared import topics

MAX_ERROR_CHARS = 2000


async def park(
    broker: KafkaBroker,
    value: bytes,
    *,
    topic: str,
    key: bytes | None,
    error: str,
    consumer_group: str,
    attempts: int,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Publish `value`, which `consumer_group` could not handle from `topic`, to that topic's DLQ."""
    await broker.publish(
        value,
        topics.dead_letter(topic),
        key=key,
        headers={
            **(headers or {}),
            "dlq-error": error[:MAX_ERROR_CHARS],
            "dlq-consumer-group": consumer_group,
            "dlq-attempts": str(attempts),
            "dlq-original-topic": topic,
        },
    )

"""The one way a record is parked: on `<topic>.dlq` as it came (value, key and every header, byte for
byte), with why in `dlq-*` headers beside them. `shared.dlq_replay` reads those to send it back, without
them, and an operator filters on them.

Parking has an aiokafka producer of its own: FastStream's publish would rewrite the headers (it sets
`content-type`, adds `correlation_id`, and takes one text value per name), so the parked record would
no longer be the one that failed.
"""

from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer

from shared import topics

MAX_ERROR_CHARS = 2000
HEADER_PREFIX = "dlq-"

Headers = Sequence[tuple[str, bytes | None]]


class DeadLetters:
    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, client_id=self._client_id)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def park(
        self,
        value: bytes | None,
        *,
        topic: str,
        key: bytes | None,
        headers: Headers = (),
        error: str,
        consumer_group: str,
        attempts: int,
        details: Mapping[str, str] | None = None,
    ) -> None:
        """Publish the record (`value`, `key`, `headers`) that `consumer_group` could not handle from `topic`
        to that topic's DLQ; `details` are more `dlq-*` headers."""
        assert self._producer is not None, "DeadLetters.start() first"
        why = {
            **(details or {}),
            "dlq-error": error[:MAX_ERROR_CHARS],
            "dlq-consumer-group": consumer_group,
            "dlq-attempts": str(attempts),
            "dlq-original-topic": topic,
        }
        await self._producer.send_and_wait(
            topics.dead_letter(topic),
            b"" if value is None and key is None else value,  # Kafka needs one of them; a null value has no bytes
            key=key,
            headers=[*headers, *((name, text.encode()) for name, text in why.items())],
        )


def without_dead_letter_headers(headers: Headers) -> list[tuple[str, bytes | None]]:
    """A parked record's own headers, as it came: what parking added taken away."""
    return [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]

"""Topic creation, so a service starts on an empty broker as well as on a provisioned cluster, and
partitions' true ends, which the embedded broker misreports."""

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        missing = set(names) - set(await admin.list_topics())
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in sorted(missing)]
                )
            except TopicAlreadyExistsError:
                pass  # another service created it between our listing and our request
    finally:
        await admin.close()


async def end_offsets(probe: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end: the offset after its last record.

    The embedded broker (Tansu) answers ListOffsets wrongly: on memory with its last batch's base
    offset + 1, on S3 with even less. Its fetch responses carry the true high watermark, so `probe`
    (a consumer of no group, used for nothing else meanwhile) fetches from just before the reported
    end of each partition, and the larger of the two counts. On Kafka they agree. The probe is left
    with no partitions: an assigned consumer keeps fetching in the background, which for a lag
    monitor that asks every 15 s would be a fetch loop over every partition, forever.
    """
    reported = await probe.end_offsets(partitions)
    if not partitions:
        return reported
    probe.assign(partitions)
    for tp in partitions:
        probe.seek(tp, max(0, reported[tp] - 1))
    await probe.getmany(*partitions, timeout_ms=1000, max_records=1)
    ends = {tp: max(reported[tp], probe.highwater(tp) or 0) for tp in partitions}
    probe.assign([])
    return ends


async def read_to_end(bootstrap_servers: str, topics: Iterable[str], *, timeout_seconds: float = 60) -> list[ConsumerRecord]:
    """Every record on `topics`, from each partition's start to its end as it is now (`end_offsets`):
    a read that is complete without waiting to see whether more comes. Raises TimeoutError, or the
    broker's error, if it cannot finish."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False)
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout_seconds):
            await consumer.start()
            await consumer.topics()  # the partitions of every topic, in the consumer's metadata
            partitions = [TopicPartition(topic, n) for topic in topics for n in consumer.partitions_for_topic(topic) or ()]
            ends = await end_offsets(consumer, partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while not all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                batches = await consumer.getmany(*partitions, timeout_ms=300, max_records=5000)
                records.extend(record for batch in batches.values() for record in batch)
    finally:
        await consumer.stop()
    return records

"""Consumer lag on the real embedded broker, whose reported end offsets hide all but one record of the
last batch."""

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from shared.consumer import ConsumerLagMonitor
from shared.metrics import PlatformMetrics

pytestmark = pytest.mark.integration


async def test_lag_counts_every_record_of_the_last_batch(running_platform):
    topic, group = f"lag-probe-{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:8]}"
    partition = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=running_platform.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=running_platform.bootstrap, linger_ms=50)
        await producer.start()
        try:
            for batch in range(3):  # three batches of five records: offsets 0-14
                await asyncio.gather(*[await producer.send(topic, b"x", partition=0) for _ in range(5)])
        finally:
            await producer.stop()
        reader = AIOKafkaConsumer(bootstrap_servers=running_platform.bootstrap, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            reader.assign([partition])
            await reader.commit({partition: 2})  # the group has processed two records
        finally:
            await reader.stop()

        offsets = AIOKafkaConsumer(bootstrap_servers=running_platform.bootstrap, group_id=None)
        await offsets.start()
        try:
            registry = CollectorRegistry()
            monitor = ConsumerLagMonitor(
                running_platform.bootstrap, group, [topic], PlatformMetrics(registry), interval_seconds=60
            )
            lags = await monitor.measure(admin, offsets)
        finally:
            await offsets.stop()
    finally:
        await admin.close()

    assert lags == {topic: 13}
    assert registry.get_sample_value("switchboard_consumer_lag_messages", {"topic": topic}) == 13

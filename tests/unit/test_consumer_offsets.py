from aiokafka import ConsumerRecord, TopicPartition

from shared.consumer import offsets_after


def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, offset=offset, timestamp=0, timestamp_type=0, key=None, value=b"{}",
        checksum=None, serialized_key_size=0, serialized_value_size=4, headers=[],
    )


def test_a_batch_commits_the_offset_after_its_last_record_of_each_partition_it_read_and_of_no_other():
    batch = [record("support.tickets.v1", 0, 41), record("support.sla.v1", 2, 7), record("support.tickets.v1", 0, 43),
             record("support.tickets.v1", 0, 42), record("support.tickets.v1", 1, 0)]

    every_partition = {TopicPartition(r.topic, r.partition) for r in batch} | {TopicPartition("support.routing.v1", 0)}

    assert offsets_after(batch, still_assigned=every_partition) == {
        TopicPartition("support.tickets.v1", 0): 44,
        TopicPartition("support.tickets.v1", 1): 1,
        TopicPartition("support.sla.v1", 2): 8,
    }


def test_a_partition_a_rebalance_took_away_meanwhile_is_left_to_its_new_owner():
    batch = [record("support.tickets.v1", 0, 5), record("support.tickets.v1", 1, 9)]

    assert offsets_after(batch, still_assigned={TopicPartition("support.tickets.v1", 1)}) == {
        TopicPartition("support.tickets.v1", 1): 10,
    }

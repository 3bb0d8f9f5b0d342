"""List what Switchboard dead-lettered from a topic, and why: read `<topic>.dlq` with confluent-kafka.

    pip install confluent-kafka==2.16.1
    python dead_letters.py support.inbound.v1                 # every dead letter, one JSON line each
    python dead_letters.py support.inbound.v1 --key cust-1042 # only those with this Kafka key

Each dead letter is the record as it was sent (value, key, headers) plus `dlq-*` headers: the reason
(`dlq-error`), the consumer group that could not process it, its attempts, and where it was.
It reads without joining a group, so it commits nothing and can run as often as you like.
"""

import argparse
import json
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", help="the topic you published to, e.g. support.inbound.v1")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--key", help="only the dead letters with this Kafka key")
    args = parser.parse_args(argv)

    dlq = f"{args.topic}.dlq"
    consumer = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": "unused", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(dlq, timeout=10).topics[dlq].partitions
        consumer.assign([TopicPartition(dlq, p, OFFSET_BEGINNING) for p in partitions])
        while (record := consumer.poll(5.0)) is not None:  # until nothing more comes for 5 s
            if record.error():
                continue
            key = (record.key() or b"").decode(errors="replace")
            if args.key and key != args.key:
                continue
            headers = record.headers() or []
            print(json.dumps({
                "key": key,
                "reason": dict(headers).get("dlq-error", b"").decode(errors="replace"),
                "consumer_group": dict(headers).get("dlq-consumer-group", b"").decode(errors="replace"),
                "headers_sent": [name for name, _ in headers if not name.startswith("dlq-")],
                "where": f"{dlq}[{record.partition()}]@{record.offset()}",
            }), flush=True)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

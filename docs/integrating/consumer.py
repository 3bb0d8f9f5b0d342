"""Follow what Switchboard does: read its events with confluent-kafka, whichever content mode they are in.

    pip install confluent-kafka==2.16.1 cloudevents==2.2.0
    python consumer.py --group my-crm                         # every event, one JSON line each, until Ctrl-C
    python consumer.py --correlation-id <id from producer.py> \\
        --until support.ticket.assigned.v1 --until support.notification.sent.v1

With `--until`, it stops once it has seen each type named (exit 0), or after `--timeout` seconds
(exit 1).
"""

import argparse
import json
import sys
import time

from cloudevents.core.bindings import kafka
from confluent_kafka import Consumer

TOPICS = ["support.tickets.v1", "support.routing.v1", "support.sla.v1", "support.notifications.v1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--group", default="my-crm")
    parser.add_argument("--correlation-id", help="only the events of this story")
    parser.add_argument("--until", action="append", default=[], help="stop once this type was seen (repeatable)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(argv)

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap_servers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        # librdkafka's default (45 s) makes joining the group on the embedded broker take about 23 s.
        "session.timeout.ms": 6000,
    })
    consumer.subscribe(TOPICS)
    waiting_for = set(args.until)
    deadline = time.monotonic() + args.timeout if args.timeout else float("inf")
    try:
        while time.monotonic() < deadline:
            record = consumer.poll(1.0)
            if record is None:
                continue
            if record.error():
                print(f"kafka: {record.error()}", file=sys.stderr)
                continue
            try:
                event = kafka.from_kafka_event(
                    kafka.KafkaMessage(headers=dict(record.headers() or []), key=record.key(), value=record.value())
                )
            except Exception as error:  # not a CloudEvent: say where it is, and go on
                print(f"skipped {record.topic()}[{record.partition()}]@{record.offset()}: {error}", file=sys.stderr)
                continue
            if args.correlation_id and event.get_extension("correlationid") != args.correlation_id:
                continue
            print(json.dumps({"type": event.get_type(), "subject": event.get_subject(), "data": event.get_data()}),
                  flush=True)
            waiting_for.discard(event.get_type())
            if args.until and not waiting_for:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())

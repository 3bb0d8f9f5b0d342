"""Open a Switchboard ticket from another system: a `ticket.submit` CloudEvent sent with confluent-kafka.

    pip install confluent-kafka==2.16.1 cloudevents==2.2.0
    python producer.py --mode binary --customer-id cust-1042 --email ann@example.com
    python producer.py --mode structured --bootstrap-servers kafka:9092 --id crm-case-88213

It prints the event's id. Every event the submission leads to carries it as its `correlationid`
(unless you set one), which is how consumer.py follows it.
"""

import argparse
import sys
import uuid

from cloudevents.core.bindings import kafka
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Producer

TOPIC = "support.inbound.v1"


def ticket_submit(args: argparse.Namespace) -> CloudEvent:
    return CloudEvent(
        {
            "specversion": "1.0",
            "type": "support.ticket.submit.v1",
            "source": args.source,  # who you are: with `id`, what makes this submission unique
            "id": args.id,  # new per submission, the same on every retry of it
            "subject": args.customer_id,  # the customer; also the Kafka key
            "datacontenttype": "application/json",
        },
        {
            "channel": "api",
            "customer": {"id": args.customer_id, "email": args.email},
            "subject": args.subject,
            "body": args.body,
            "required_skills": args.skill,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--mode", choices=["binary", "structured"], default="binary")
    parser.add_argument("--source", default="crm/acme")
    parser.add_argument("--id", default=None, help="the event's id (default: a new UUID)")
    parser.add_argument("--customer-id", default="cust-1042")
    parser.add_argument("--email", default="ann@example.com")
    parser.add_argument("--subject", default="Refund for order 1042")
    parser.add_argument("--body", default="I was charged twice, please refund one payment.")
    parser.add_argument("--skill", action="append", default=[], help="a skill the ticket needs (repeatable)")
    args = parser.parse_args(argv)
    args.id = args.id or str(uuid.uuid4())

    event = ticket_submit(args)
    message = kafka.to_binary_event(event) if args.mode == "binary" else kafka.to_structured_event(event)
    outcome = []
    producer = Producer({"bootstrap.servers": args.bootstrap_servers})
    producer.produce(
        TOPIC,
        key=args.customer_id,  # one customer's submissions stay in order on one partition
        value=message.value,
        headers=list(message.headers.items()),
        on_delivery=lambda error, _: outcome.append(error),
    )
    producer.flush(30)
    if outcome != [None]:
        print(f"not delivered: {outcome[0] if outcome else 'timed out'}", file=sys.stderr)
        return 1
    print(event.get_id())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long a confluent-kafka (librdkafka) consumer takes to join its group on the embedded broker (Tansu on
S3, as `switchboard up` runs it), with librdkafka's default settings and with `session.timeout.ms=6000`.

    .venv/bin/python -m benchmarks.consumer_join [--rounds 3]

Each round, a new group subscribes to one topic; the time is from `subscribe` to its first assignment.
"""

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from benchmarks.broker import broker

TOPIC = "join-measure"
SETTINGS = {"default": {}, "session.timeout.ms=6000": {"session.timeout.ms": 6000}}


def seconds_to_join(bootstrap: str, settings: dict) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"join-{uuid.uuid4().hex[:8]}", **settings})
    assigned: list[float] = []
    started = time.monotonic()
    consumer.subscribe([TOPIC], on_assign=lambda *_: assigned.append(time.monotonic()))
    while not assigned and time.monotonic() - started < 120:
        consumer.poll(0.1)
    consumer.close()
    return assigned[0] - started if assigned else float("nan")


def create_topic(bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(TOPIC, b"x")
    producer.flush(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, broker("durable", Path(workdir)) as (bootstrap, _):
        create_topic(bootstrap)
        for _ in range(args.rounds):
            for name, settings in SETTINGS.items():
                print(f"{name:>26}: joined in {seconds_to_join(bootstrap, settings):.1f} s", flush=True)


if __name__ == "__main__":
    main()

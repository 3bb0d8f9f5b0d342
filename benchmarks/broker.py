"""The embedded broker's two engines side by side: Tansu on memory (what `switchboard up` used to run)
and Tansu on S3 served by SeaweedFS from a directory (what it runs now, and keeps through a crash).

    .venv/bin/python -m benchmarks.broker [--messages 20000]

For each engine: messages a second produced in batches (a relay's way) and one at a time (waiting for
each acknowledgement), consumed by a group, and the CPU-ms per 1,000 messages of each of its processes.
"""

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.pipeline import cpu_seconds
from shared.launcher.servers import (
    broker_command,
    broker_environment,
    broker_storage_command,
    broker_storage_environment,
    free_port,
    listening,
    stop_process,
)

MESSAGE = b"x" * 600  # about the size of a ticket.created event
SEQUENTIAL_SHARE = 20  # one message in this many is sent on its own: those are slow on a durable engine


def cpu_ms(pid: int) -> float:
    return cpu_seconds(pid) * 1000


def wait_listening(port: int, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 60
    while not listening(port):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.1)


@contextmanager
def broker(engine: str, workdir: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """A broker on `engine` ("memory" or "durable"); yields its bootstrap address and its processes' pids."""
    port, processes, env = free_port(), [], dict(os.environ)
    command = broker_command(port)
    try:
        if engine == "durable":
            storage_port = free_port()
            keys = ("benchmark", "benchmark-secret")
            storage = subprocess.Popen(
                broker_storage_command(workdir, storage_port, *keys),
                env=env | broker_storage_environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            processes.append(storage)
            wait_listening(storage_port, processes)
            env |= broker_environment(storage_port, *keys)
        else:
            command[command.index("--storage-engine") + 1] = "memory://tansu/"
        tansu = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        processes.append(tansu)
        wait_listening(port, processes)
        pids = {"tansu": tansu.pid} | ({"seaweedfs": processes[0].pid} if engine == "durable" else {})
        yield f"127.0.0.1:{port}", pids
    finally:
        for process in reversed(processes):
            stop_process(process)


async def measure(bootstrap: str, pids: dict[str, int], messages: int) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await producer.send_and_wait("warm-up", b"x")  # creates the topic and opens the connection
        before = {name: cpu_ms(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        sends = [await producer.send("bench", MESSAGE, key=str(n % 64).encode()) for n in range(messages)]
        await asyncio.gather(*sends)
        batched = messages / (time.perf_counter() - started)
        one_by_one = messages // SEQUENTIAL_SHARE
        started = time.perf_counter()
        for n in range(one_by_one):
            await producer.send_and_wait("bench", MESSAGE, key=str(n % 64).encode())
        sequential = one_by_one / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        "bench", bootstrap_servers=bootstrap, group_id="bench", auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        started, read = time.perf_counter(), 0
        while read < messages + one_by_one:
            batches = await consumer.getmany(timeout_ms=5000, max_records=2000)
            if not batches:
                break
            read += sum(len(records) for records in batches.values())
            await consumer.commit()
        consumed = read / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    after = {name: cpu_ms(pid) for name, pid in pids.items()}
    work = (messages + one_by_one) * 2 / 1000  # each message written once and read once
    return {
        "produced/s (batched)": batched,
        "produced/s (one at a time)": sequential,
        "consumed/s": consumed,
        "read back": read,
        **{f"{name} CPU-ms per 1,000": (after[name] - before[name]) / work for name in pids},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    results = {}
    for engine in ("memory", "durable"):
        with tempfile.TemporaryDirectory(prefix="switchboard-broker-") as workdir:
            with broker(engine, Path(workdir)) as (bootstrap, pids):
                results[engine] = asyncio.run(measure(bootstrap, pids, args.messages))
    rows = sorted({name for figures in results.values() for name in figures}, key=lambda n: ("CPU" in n, n))
    print(f"{'':32} {'memory':>12} {'durable':>12} {'durable/memory':>15}")
    for name in rows:
        memory, durable = results["memory"].get(name), results["durable"].get(name)
        ratio = f"{durable / memory:.2f}x" if memory and durable else ""
        print(f"{name:32} {memory or 0:12.1f} {durable or 0:12.1f} {ratio:>15}")


if __name__ == "__main__":
    main()

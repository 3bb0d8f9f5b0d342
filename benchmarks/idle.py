"""Idle benchmark: what each process of the embedded platform costs when nothing happens. Never asserts.

    .venv/bin/python -m benchmarks.idle [--settle 30] [--seconds 60]

1. Starts `make run`'s platform on free ports and lets it settle (`--settle` seconds: joins, first
   polls, the relays' backoff growing to its longest).
2. Over `--seconds`, reads each process's CPU time from /proc, and, side by side in the same window,
   that of a bare aiokafka consumer in its own group on the same broker, reading the four topics a
   service reads at most (the consumer's settings are the services'). That consumer is the floor:
   what any service pays for being subscribed, before any work of its own.
3. Prints CPU-ms per second of each process, each service's ratio to the floor, and the issue's
   limit (< 5 ms/s per service).
"""

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from benchmarks.pipeline import IDLE_TARGET_MS_PER_SECOND, cpu_snapshot, cpu_used
from shared import topics
from shared.consumer import CONSUMER_TIMEOUT_MS, FETCH_MAX_WAIT_MS, HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from shared.launcher.platform import SERVICES, Platform, Ports, embedded_environ

FLOOR_TOPICS = (topics.TICKETS, topics.ROUTING, topics.SLA, topics.NOTIFICATIONS)  # insights' four


async def measure(platform: Platform, settle: float, seconds: float) -> tuple[dict[str, float], float]:
    """CPU ms per second of each process, and of a bare subscribed consumer (in this process, alone)."""
    floor = AIOKafkaConsumer(
        *FLOOR_TOPICS,
        bootstrap_servers=platform.service_environment("intake")["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=f"idle-floor-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        consumer_timeout_ms=CONSUMER_TIMEOUT_MS,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        auto_offset_reset="latest",
    )
    await floor.start()
    try:
        await asyncio.sleep(settle)
        before = cpu_snapshot(platform)
        started = time.perf_counter()
        await asyncio.sleep(seconds)  # the consumer fetches and heartbeats in its own tasks meanwhile
        used = cpu_used(before, cpu_snapshot(platform))
        elapsed = time.perf_counter() - started
    finally:
        await floor.stop()
    floor_ms = used.pop("benchmark") * 1000 / elapsed
    return {name: seconds_used * 1000 / elapsed for name, seconds_used in used.items()}, floor_ms


def report(idle: dict[str, float], floor: float, seconds: float) -> str:
    lines = [
        f"idle CPU over {seconds:.0f} s, ms per second (services' limit < {IDLE_TARGET_MS_PER_SECOND:g} ms/s)",
        f"    {'a bare consumer of 4 topics (floor)':<38} {floor:>7.1f}",
    ]
    for name, used in idle.items():
        if name in SERVICES:
            verdict = "met" if used < IDLE_TARGET_MS_PER_SECOND else "MISSED"
            lines.append(f"    {name:<38} {used:>7.1f}   {used / floor:>5.1f}x the floor   {verdict}")
        else:
            lines.append(f"    {name:<38} {used:>7.1f}")
    lines.append(f"    {'platform':<38} {sum(idle.values()):>7.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait after start before measuring")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds measured")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # a kill still stops the platform
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-idle-"))
    platform = Platform(workdir, Ports.free(), environ=embedded_environ())
    try:
        print(f"starting the platform in {workdir}", flush=True)
        platform.start()
        idle, floor = asyncio.run(measure(platform, args.settle, args.seconds))
    finally:
        platform.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(idle, floor, args.seconds))


if __name__ == "__main__":
    main()

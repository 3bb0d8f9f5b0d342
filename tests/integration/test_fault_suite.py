"""The fault suite in `make test`: every fault of benchmarks/faults.py with tickets flowing through every
service, on the embedded stack, healed by the launcher's supervisor alone.

The full version (thousands of tickets, repeated kills) is `python -m benchmarks.faults`; this one runs
a few dozen tickets per fault so it stays within a few minutes.
"""

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from benchmarks.faults import FAULTS, run_suite, table
from shared.launcher.platform import SERVICES, Ports, embedded_environ
from shared.launcher.servers import listening, stop_process

pytestmark = pytest.mark.integration

TICKET_FAULTS = tuple(fault for fault in FAULTS if fault != "kill insights")
"""Killing insights, a read model that publishes nothing, changes nothing these checks see (tickets,
assignments, mail; its lag still counts towards healing after every fault): `python -m benchmarks.faults`
still runs that kill, the suite saves its minute."""
RECOVERY_LIMIT_SECONDS = 120.0
"""What the README promises: after any of these faults, the platform has caught up within two minutes."""


@pytest.mark.timeout(1200)  # ten faults, each healed within RECOVERY_LIMIT_SECONDS
async def test_no_fault_loses_duplicates_overfills_or_strands_a_ticket(tmp_path):
    outcomes = await run_suite(
        tmp_path / "data", TICKET_FAULTS, tickets=24, kills=1, rate=12.0, recovery_limit=RECOVERY_LIMIT_SECONDS
    )

    report = table(outcomes, RECOVERY_LIMIT_SECONDS)
    print(report)
    assert [outcome.fault for outcome in outcomes] == list(TICKET_FAULTS)
    assert all(outcome.load == 24 for outcome in outcomes), report
    assert [(o.fault, o.problems[:3]) for o in outcomes if not o.clean] == [], report
    frozen = next(o for o in outcomes if o.fault.startswith("stop kafka"))
    assert frozen.not_ready == set(SERVICES), "a service that cannot reach Kafka says so"


def test_switchboard_up_restarts_a_crashed_service_and_stops_every_part_before_it_returns(tmp_path):
    ports = Ports.free()
    command = [sys.executable, "-m", "shared.launcher.cli", "up", "--data-dir", str(tmp_path / "data")]
    command += [arg for name in Ports.__dataclass_fields__ for arg in (f"--{name.replace('_', '-')}-port", str(ports.of(name)))]
    log = (tmp_path / "up.log").open("w+")
    launcher = subprocess.Popen(command, env=embedded_environ(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Switchboard is ready" in read(log), 120)
        routing = f"http://127.0.0.1:{ports.routing}"
        pid = routing_pid(launcher.pid)
        os.kill(pid, signal.SIGKILL)

        wait_for(lambda: "routing restarted" in read(log), 30)
        wait_for(lambda: ready(routing), 90)
        assert re.search(r"routing exited with code -9; restarting it in \d+s", read(log))
        assert routing_pid(launcher.pid) != pid

        launcher.send_signal(signal.SIGINT)  # Ctrl-C
        launcher.send_signal(signal.SIGTERM)  # and what `make run` passes on right after it
        assert launcher.wait(90) == 0
        still_listening = [name for name, port in ports.servers().items() if listening(port)]
        assert still_listening == [], "every part has stopped by the time `switchboard up` returns"
    finally:
        stop_process(launcher, 30)
        log.close()


def routing_pid(launcher_pid: int) -> int:
    """The launcher's child running `python -m services.routing`."""
    children = open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split()
    for child in children:
        cmdline = open(f"/proc/{child}/cmdline", "rb").read().split(b"\0")
        if b"services.routing" in cmdline:
            return int(child)
    raise LookupError("routing is not running")


def read(log) -> str:
    log.seek(0)
    return log.read()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)

"""Starts, supervises and stops the whole platform: embedded infrastructure, then the five services.

Used by `switchboard up` and by the integration tests alike, so tests run the services exactly
the way a newcomer does. Every child is its own OS process; each is stopped by its process id,
and on Linux each is also told to exit if the launcher itself dies. A child that dies on its own
is started again after a backoff, as a supervisor or Kubernetes would (`Platform.supervise`).
"""

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.launcher.servers import (
    broker_command,
    broker_environment,
    broker_storage_command,
    broker_storage_environment,
    free_port,
    free_ports,
    listening,
    mongo_wire_command,
    stop_process,
    stop_processes,
)

SERVICES = ("intake", "routing", "sla", "notify", "insights")
EXTERNAL_INFRASTRUCTURE = ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL", "SMTP_URL", "SWITCHBOARD_API_KEYS")
"""Variables that point the platform at real infrastructure (and real keys) instead of the embedded parts."""
DEV_API_KEY = "dev-key"
STOP_GRACE_SECONDS = 10.0
BROKER_STORAGE_STOP_GRACE_SECONDS = 2.0
"""SeaweedFS's `weed server` spends about 25 s winding down its own gRPC streams after SIGTERM. What it
acknowledged is in its volume files already (the fault suite SIGKILLs it and loses nothing), so
waiting buys nothing; it stops last, after the broker that wrote to it."""
EMBEDDED_TOPIC_PARTITIONS = "1"
"""Partitions of the topics services create on the embedded broker, unless `KAFKA_TOPIC_PARTITIONS` is set.
The embedded broker stores every partition's batches and watermark as objects in SeaweedFS, so each
partition a batch touches costs its own writes, and each one a consumer fetches costs a read every
poll. On one machine more partitions buy no parallelism, only that cost (benchmarks/pipeline.py: the
broker and its storage spent 27.7 CPU-ms per ticket with 6 partitions, 13.4 with 1)."""
GENERATED_SECRETS = ("CSAT_SIGNING_KEY", "INBOUND_EMAIL_SIGNING_KEY", "WEBHOOK_SIGNING_KEY")
"""Signing keys services share (intake verifies what notify signs); made once per data dir unless set."""
DATABASE_SERVERS = {service: f"mongodb_{service}" for service in SERVICES}
"""Each service's database has an nx-27017 process of its own, on consecutive ports from `Ports.mongodb` in
`SERVICES`' order. nx-27017 is Python: one process serving every database ran their commands one at a
time under its interpreter lock, on one core, and the services waited on it. Five processes use both cores
(benchmarks/pipeline.py: 1.14-1.38x the tickets a second to assigned and to acknowledged, and less CPU per ticket).
No database is served by two processes, so each server's view of its files is the only one."""
YIELDING = frozenset({"insights", DATABASE_SERVERS["insights"]})
"""Parts nobody waits on, which run at a lower CPU priority (`YIELDING_NICENESS`): insights is a read model,
and in a burst it and its database server give the cores to the path a customer waits on (the ticket's
creation, assignment and acknowledgement), then catch up. Lagging, insights reads fuller batches, in which
more of a ticket's events fold into one write, so it also spends less. benchmarks/pipeline.py, three pairs
on one machine: acknowledged 1.07-1.17x, assigned 0.98-1.19x, the platform's CPU per ticket 0.84-0.95x."""
YIELDING_NICENESS = 10
"""How much nicer than the launcher they run: the kernel then gives each of them about a tenth of the CPU
time a part at the launcher's own priority gets, while both want it, and all of it when nobody else does."""
INFRASTRUCTURE = ("broker_storage", "kafka", *DATABASE_SERVERS.values(), "smtp")
"""The embedded servers, in the order they start; they stop in the reverse order, after the services."""
RESTART_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""How long a crashed part waits before each restart in a row: a part that keeps crashing does not spin."""
STABLE_SECONDS = 60.0
"""A part that ran this long before it crashed starts its backoff afresh."""


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    broker_storage: int = 9095
    mongodb: int = 27017
    """The first database server's (intake's); the others follow it: see `DATABASE_SERVERS`."""
    smtp: int = 2525
    intake: int = 8001
    routing: int = 8002
    sla: int = 8003
    notify: int = 8004
    insights: int = 8005

    def of(self, name: str) -> int:
        """The port a field names (`switchboard up --<field>-port`), or a database server's by its process name."""
        return getattr(self, name) if name in self.__dataclass_fields__ else self.servers()[name]

    def database(self, service: str) -> int:
        """The port of the embedded server of `service`'s database."""
        return self.mongodb + SERVICES.index(service)

    def servers(self) -> dict[str, int]:
        """Every port the platform listens on, by the name of what listens."""
        ports = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "mongodb"}
        return ports | {server: self.database(service) for service, server in DATABASE_SERVERS.items()}

    @classmethod
    def free(cls) -> "Ports":
        """Free ports for every server: for tests and benchmarks beside a running `make run`."""
        ports = {name: free_port() for name in cls.__dataclass_fields__ if name != "mongodb"}
        return cls(**ports, mongodb=free_ports(len(SERVICES)))


def embedded_environ(**settings: str) -> dict[str, str]:
    """This process's environment without external infrastructure, plus `settings` for the services: what a
    test or benchmark starts its own embedded platform with, whatever the developer's shell points at."""
    return {name: value for name, value in os.environ.items() if name not in EXTERNAL_INFRASTRUCTURE} | settings


class LaunchError(RuntimeError):
    """A part of the platform did not start; the message says which and where its log is."""


@dataclass
class Platform:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    ready_timeout_seconds: float = 90.0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _commands: dict[str, tuple[list[str], Mapping[str, str] | None]] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    _crashes: dict[str, int] = field(default_factory=dict)
    _restart_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    # --- what runs where -------------------------------------------------------------------

    @property
    def kafka_embedded(self) -> bool:
        return not self.environ.get("KAFKA_BOOTSTRAP_SERVERS")

    @property
    def mongodb_embedded(self) -> bool:
        return not self.environ.get("MONGODB_URL")

    @property
    def smtp_embedded(self) -> bool:
        return not self.environ.get("SMTP_URL")

    @property
    def api_key(self) -> str:
        return self.environ.get("SWITCHBOARD_API_KEYS", "").split(",")[0].strip() or DEV_API_KEY

    @property
    def maildir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.of(service)}"

    def mongodb_url(self, service: str) -> str:
        """Where `service`'s database is: its own embedded server, or the MongoDB the environment names."""
        if not self.mongodb_embedded:
            return self.environ["MONGODB_URL"]
        return f"mongodb://127.0.0.1:{self.ports.database(service)}"

    def service_environment(self, service: str) -> dict[str, str]:
        env = dict(self.environ)
        env.setdefault("SWITCHBOARD_API_KEYS", DEV_API_KEY)
        if self.kafka_embedded:
            env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{self.ports.kafka}"
            env.setdefault("KAFKA_TOPIC_PARTITIONS", EMBEDDED_TOPIC_PARTITIONS)
        env.setdefault("SMTP_URL", f"smtp://127.0.0.1:{self.ports.smtp}")
        if self.mongodb_embedded:
            env["MONGODB_URL"] = self.mongodb_url(service)
            env["MONGODB_TRANSACTION_LOCK_DIR"] = str(self.data_dir / "mongo")
        for name in GENERATED_SECRETS:
            env.setdefault(name, self._secret(name))
        env.setdefault("INTAKE_PUBLIC_URL", self.url("intake"))  # the survey links notify mails reach this intake
        env["HTTP_HOST"] = "127.0.0.1"
        env["HTTP_PORT"] = str(self.ports.of(service))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _secret(self, name: str) -> str:
        path = self.data_dir / "secrets" / name.lower()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, services: Sequence[str] = SERVICES) -> None:
        """The embedded infrastructure, then `services` (all five, unless a benchmark or test wants fewer)."""
        for folder in (self.logs, self.maildir, self.data_dir / "mongo", self.data_dir / "broker"):
            folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start_infrastructure()
            for service in services:
                self.start_service(service)
            for service in services:
                self.wait_ready(service)
        except BaseException:
            self.stop()
            raise

    def _start_infrastructure(self) -> None:
        if self.kafka_embedded:
            keys = (self._secret("BROKER_STORAGE_ACCESS_KEY"), self._secret("BROKER_STORAGE_SECRET_KEY"))
            self._spawn(
                "broker_storage",
                broker_storage_command(self.data_dir / "broker", self.ports.broker_storage, *keys),
                env={**self.environ, **broker_storage_environment()},
            )
            self._wait_for_port("broker_storage", self.ports.broker_storage)
            self._spawn(
                "kafka",
                broker_command(self.ports.kafka),
                env={**self.environ, **broker_environment(self.ports.broker_storage, *keys)},
            )
        if self.mongodb_embedded:
            for server in DATABASE_SERVERS.values():
                log = self.logs / f"{server}-server.log"
                self._spawn(server, mongo_wire_command(self.data_dir / "mongo", self.ports.of(server), log))
        if self.smtp_embedded:
            self._spawn(
                "smtp",
                [sys.executable, "-m", "shared.launcher.smtp_sink", "--port", str(self.ports.smtp),
                 "--maildir", str(self.maildir)],
            )
        for name in INFRASTRUCTURE:
            if name in self.processes:
                self._wait_for_port(name, self.ports.of(name))

    def start_service(self, service: str) -> None:
        self._spawn(service, [sys.executable, "-m", f"services.{service}"], env=self.service_environment(service))

    def start_replica(self, service: str) -> tuple[str, str]:
        """One more process of `service` on a free port, sharing everything else, as a second replica of
        a Deployment runs; stopped with the rest, or on its own by `terminate`. Returns its name and URL."""
        name = f"{service}-replica-{sum(process.startswith(f'{service}-replica-') for process in self._commands) + 1}"
        url = f"http://127.0.0.1:{(port := free_port())}"
        env = {**self.service_environment(service), "HTTP_PORT": str(port)}
        self._spawn(name, [sys.executable, "-m", f"services.{service}"], env=env)
        self.wait_ready(name, url)
        return name, url

    def wait_ready(self, service: str, url: str | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout_seconds
        while time.monotonic() < deadline:
            self._check_alive(service)
            try:
                if httpx.get(f"{url or self.url(service)}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise LaunchError(f"{service} was not ready within {self.ready_timeout_seconds:.0f}s; see {self._log(service)}")

    def terminate(self, name: str) -> None:
        """SIGTERM, as a rolling update would: the part finishes what it holds and stops."""
        stop_process(self.processes.pop(name), STOP_GRACE_SECONDS)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def respawn(self, name: str) -> None:
        """Start a killed part again, the way it was first started, and wait until it serves."""
        self._spawn(name, *self._commands[name])
        if name in SERVICES:
            self.wait_ready(name)
        else:
            self._wait_for_port(name, self.ports.of(name))

    def stop(self) -> None:
        """Services first, so they finish their work while the infrastructure is still up."""
        services = [self.processes.pop(name) for name in list(self.processes) if name not in INFRASTRUCTURE]
        stop_processes(services, STOP_GRACE_SECONDS)
        for name in reversed(INFRASTRUCTURE):
            if name in self.processes:
                grace = BROKER_STORAGE_STOP_GRACE_SECONDS if name == "broker_storage" else STOP_GRACE_SECONDS
                stop_process(self.processes.pop(name), grace)
        self._restart_at.clear()

    def exited(self) -> dict[str, int]:
        """Children that stopped on their own, with their exit codes."""
        return {name: code for name, process in self.processes.items() if (code := process.poll()) is not None}

    def supervise(self) -> list[str]:
        """Restart every child that died on its own, each after its backoff; returns what it did, to log.

        Called every fraction of a second by `switchboard up`. A restarted child is not waited for: the
        others keep working (and say not-ready) until it is back, and call this again meanwhile.
        """
        now = time.monotonic()
        happened = []
        for name, code in self.exited().items():
            if name in self._restart_at:
                continue
            if now - self._started_at[name] >= STABLE_SECONDS:
                self._crashes[name] = 0
            delay = RESTART_BACKOFF_SECONDS[min(self._crashes.get(name, 0), len(RESTART_BACKOFF_SECONDS) - 1)]
            self._crashes[name] = self._crashes.get(name, 0) + 1
            self._restart_at[name] = now + delay
            happened.append(f"{name} exited with code {code}; restarting it in {delay:.0f}s (see {self._log(name)})")
        for name, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[name]
                self._spawn(name, *self._commands[name])
                happened.append(f"{name} restarted (pid {self.processes[name].pid}, restart {self._crashes[name]})")
        return happened

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> None:
        self._commands[name] = (command, env)
        self._started_at[name] = time.monotonic()
        log = self._log(name).open("ab")
        self.processes[name] = subprocess.Popen(
            command,
            env=dict(env or self.environ),
            cwd=_repository_root(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=_exit_with_parent,
        )
        if name.partition("-replica-")[0] in YIELDING:
            _lower_priority(self.processes[name].pid, YIELDING_NICENESS)
        log.close()

    def _check_alive(self, name: str) -> None:
        code = self.processes[name].poll()
        if code is not None:
            raise LaunchError(f"{name} exited with code {code}; see {self._log(name)}")

    def _wait_for_port(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.ready_timeout_seconds
        while time.monotonic() < deadline:
            self._check_alive(name)
            if listening(port):
                return
            time.sleep(0.1)
        raise LaunchError(f"{name} did not listen on port {port}; see {self._log(name)}")

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def _repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _lower_priority(pid: int, by: int) -> None:
    """`by` nicer than the launcher itself, which may run niced already (19 is the nicest there is)."""
    os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + by))


def _exit_with_parent() -> None:
    """Linux: deliver SIGTERM to the child when the launcher dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)

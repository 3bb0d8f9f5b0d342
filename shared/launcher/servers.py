"""The embedded servers' command lines, and one of them on its own for benchmarks and tests.

The launcher starts every server for `switchboard up`; a benchmark or a use-case test needs only
the Mongo-wire server, on a free port, stopped by its process id whatever happens.
"""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `grace_seconds`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def venv_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def mongo_wire_command(data_dir: Path, port: int, log_file: Path) -> list[str]:
    """nx-27017 with one SQLite file per database under `data_dir` (a single `--db` file would make
    every database share its tables), its own pid file (the default in /tmp clashes with any
    other nx-27017 running), and a log without stored data (`shared.launcher.mongo_wire`)."""
    return [sys.executable, "-m", "shared.launcher.mongo_wire", "--data-dir", str(data_dir), "-p", str(port),
            "--log-file", str(log_file), "--pid-file", str(data_dir / "nx-27017.pid")]


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

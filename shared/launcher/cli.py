"""`switchboard up`: run the whole platform on this machine, on embedded infrastructure by default."""

import argparse
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from shared.launcher.platform import SERVICES, LaunchError, Platform, Ports

SUPERVISE_INTERVAL_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description="Switchboard customer-support platform")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the platform and keep it running until Ctrl-C or SIGTERM")
    up.add_argument("--data-dir", type=Path, default=Path(".switchboard"), help="default: ./.switchboard")
    defaults = Ports()
    names = [port.name for port in fields(Ports)]
    for name in names:
        up.add_argument(f"--{name.replace('_', '-')}-port", type=int, default=defaults.of(name), metavar="PORT")
    args = parser.parse_args(argv)

    ports = Ports(**{name: getattr(args, f"{name}_port") for name in names})
    if problem := _port_problem(ports):
        up.error(problem)
    platform = Platform(args.data_dir, ports)
    for signum in (signal.SIGINT, signal.SIGTERM):  # even where a parent shell ignored SIGINT
        signal.signal(signum, _raise_interrupt)
    started = time.monotonic()
    try:
        platform.start()
    except LaunchError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _print_welcome(platform, time.monotonic() - started)
    try:
        while True:
            for happening in platform.supervise():
                print(f"{time.strftime('%H:%M:%S')} switchboard: {happening}", file=sys.stderr, flush=True)
            time.sleep(SUPERVISE_INTERVAL_SECONDS)
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        platform.stop()


def _port_problem(ports: Ports) -> str | None:
    """Why these ports cannot all be served, if they cannot: `--mongodb-port P` takes P+1 to P+4 too."""
    servers = ports.servers()
    if out_of_range := sorted(name for name, port in servers.items() if not 1 <= port <= 65535):
        return f"ports out of range (1-65535) for {', '.join(out_of_range)}; --mongodb-port P also uses P+1 to P+4"
    by_port: dict[int, list[str]] = {}
    for name, port in servers.items():
        by_port.setdefault(port, []).append(name)
    if shared := [" and ".join(names) for names in by_port.values() if len(names) > 1]:
        return f"one port each, please: {'; '.join(shared)} would share one (--mongodb-port P also uses P+1 to P+4)"
    return None


def _raise_interrupt(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM stops the platform; later ones are ignored, so that a second one
    (`make run` passes its own on) cannot cut the stop short and leave a part still listening."""
    for later in (signal.SIGINT, signal.SIGTERM):
        signal.signal(later, signal.SIG_IGN)
    raise KeyboardInterrupt


def _print_welcome(platform: Platform, seconds: float) -> None:
    print(f"Switchboard is ready ({seconds:.1f}s).")
    for service in SERVICES:
        print(f"  {service:<8} {platform.url(service)}   (docs: {platform.url(service)}/docs)")
    infra = [
        ("kafka", f"127.0.0.1:{platform.ports.kafka}  log kept in {platform.data_dir / 'broker'}",
         platform.kafka_embedded),
        ("mongodb", ", ".join(f"{service} {platform.mongodb_url(service)}" for service in SERVICES),
         platform.mongodb_embedded),
        ("smtp", f"smtp://127.0.0.1:{platform.ports.smtp}  mail kept in {platform.maildir}", platform.smtp_embedded),
    ]
    for name, where, embedded in infra:
        print(f"  {name:<8} {where if embedded else 'external (from the environment)'}")
    print(f"  API key  {platform.api_key}   (send 'Authorization: Bearer {platform.api_key}')")
    print(f"  logs     {platform.logs}")
    print("Press Ctrl-C to stop.")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())

"""`switchboard up`: run the whole platform on this machine, on embedded infrastructure by default."""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from shared.launcher.platform import SERVICES, LaunchError, Platform, Ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description="Switchboard customer-support platform")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the platform and keep it running until Ctrl-C or SIGTERM")
    up.add_argument("--data-dir", type=Path, default=Path(".switchboard"), help="default: ./.switchboard")
    defaults = Ports()
    for name in ("kafka", "mongodb", "smtp", *SERVICES):
        up.add_argument(f"--{name}-port", type=int, default=defaults.of(name), metavar="PORT")
    args = parser.parse_args(argv)

    ports = Ports(**{name: getattr(args, f"{name}_port") for name in ("kafka", "mongodb", "smtp", *SERVICES)})
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
        while not (exited := platform.exited()):
            time.sleep(0.5)
        for name, code in exited.items():
            print(f"switchboard: {name} exited with code {code}; see {platform.logs / (name + '.log')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        platform.stop()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_welcome(platform: Platform, seconds: float) -> None:
    print(f"Switchboard is ready ({seconds:.1f}s).")
    for service in SERVICES:
        print(f"  {service:<8} {platform.url(service)}   (docs: {platform.url(service)}/docs)")
    infra = [
        ("kafka", f"127.0.0.1:{platform.ports.kafka}", platform.kafka_embedded),
        ("mongodb", f"mongodb://127.0.0.1:{platform.ports.mongodb}", platform.mongodb_embedded),
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

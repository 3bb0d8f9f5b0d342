"""Notifications per second to a local SMTP server and to a local webhook receiver.

`python -m benchmarks.notify [--messages 300]` starts the embedded broker, the Mongo-wire
server and notify (through the launcher's code, on free ports, in a temporary directory), with an
aiosmtpd server and an HTTP receiver in this process. It publishes `--messages` ticket.created
events (one acknowledgement mail each) and as many sla.breached events (one team webhook each),
and measures from the first publish to the last message received. For scale, the same number of
messages is also sent straight from this process (aiosmtplib, httpx; 20 at a time): the ratio is
what notify's durability (a transaction per claim and per outcome, the outbox) costs.
"""

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiosmtplib
import httpx
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import Channel, Customer, Priority, SlaBreached, TicketCreated
from shared.launcher.platform import Platform, Ports, embedded_environ
from shared.launcher.servers import free_port

RULES = """
version: 1
rules:
  - {kind: acknowledgement, event: support.ticket.created.v1, to: [customer], transactional: true, urgent: true}
  - {kind: sla_breached, event: support.sla.breached.v1, to: [team], transactional: true, urgent: true}
"""


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self._lock = threading.Lock()

    def hit(self) -> None:
        with self._lock:
            self.count += 1
            self.last = time.perf_counter()


class Sink:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.counter.hit()
        return "250 OK"


def webhook_receiver(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            counter.hit()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Receiver(ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 resets connections when 20 senders connect at once
        daemon_threads = True

    server = Receiver(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def wait_for(counter: Counter, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while counter.count < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {counter.count} of {expected} arrived within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def through_notify(bootstrap: str, messages: int, mail: Counter, hooks: Counter) -> tuple[float, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        mail_start = time.perf_counter()
        for number in range(messages):
            ticket_id = f"TKT-bench-{uuid.uuid4().hex[:10]}"
            event = new_event(
                TicketCreated(ticket_id=ticket_id, channel=Channel.API, priority=Priority.NORMAL, required_skills=[],
                              customer=Customer(email=f"bench-{number}@example.com"), subject="Benchmark",
                              created_at=utc_now()),
                source="bench", subject=ticket_id,
            )
            await producer.send(topics.TICKETS, event.to_json(), key=ticket_id.encode())
        await producer.flush()
        await wait_for(mail, messages, timeout=60 + messages)
        mail_rate = messages / (mail.last - mail_start)
        hook_start = time.perf_counter()
        now = utc_now()
        for _ in range(messages):
            ticket_id = f"TKT-bench-{uuid.uuid4().hex[:10]}"
            event = new_event(
                SlaBreached(ticket_id=ticket_id, metric="first_reply", target_seconds=60,
                            due_at=now - timedelta(seconds=1), breached_at=now),
                source="bench", subject=ticket_id,
            )
            await producer.send(topics.SLA, event.to_json(), key=ticket_id.encode())
        await producer.flush()
        await wait_for(hooks, messages, timeout=60 + messages)
        return mail_rate, messages / (hooks.last - hook_start)
    finally:
        await producer.stop()


async def directly(smtp_port: int, hook_url: str, messages: int, mail: Counter, hooks: Counter) -> tuple[float, float]:
    limit = asyncio.Semaphore(20)

    async def one_mail(number: int) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.com", f"direct-{number}@example.com", "Direct"
        message.set_content("Direct")
        async with limit:
            await aiosmtplib.send(message, hostname="127.0.0.1", port=smtp_port)

    start, before = time.perf_counter(), mail.count
    await asyncio.gather(*(one_mail(n) for n in range(messages)))
    await wait_for(mail, before + messages, timeout=60)
    mail_rate = messages / (time.perf_counter() - start)

    async with httpx.AsyncClient() as client:
        async def one_hook(number: int) -> None:
            async with limit:
                await client.post(hook_url, json={"text": f"direct {number}"})

        start = time.perf_counter()
        await asyncio.gather(*(one_hook(n) for n in range(messages)))
    return mail_rate, messages / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    mail, hooks = Counter(), Counter()
    smtp_port = free_port()
    controller = Controller(Sink(mail), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    receiver = webhook_receiver(hooks)
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/team"
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as directory:
        rules = Path(directory) / "rules.yaml"
        rules.write_text(RULES)
        environ = embedded_environ(
            SMTP_URL=f"smtp://127.0.0.1:{smtp_port}", NOTIFY_RULES_PATH=str(rules), TEAM_WEBHOOK_URL=hook_url,
            SENDER_POLL_INTERVAL_SECONDS="0.05", RATE_LIMIT_PER_RECIPIENT="1000000", LOG_LEVEL="WARNING",
            OUTBOUND_URL_ALLOWLIST="127.0.0.1",  # our webhook receiver
        )
        ports = Ports.free()
        platform = Platform(Path(directory) / "data", ports, environ=environ)
        try:
            platform.start(["notify"])  # with the broker and Mongo-wire server; the SMTP server is ours
            notify_mail, notify_hooks = asyncio.run(
                through_notify(f"127.0.0.1:{ports.kafka}", args.messages, mail, hooks)
            )
            direct_mail, direct_hooks = asyncio.run(directly(smtp_port, hook_url, args.messages, mail, hooks))
        finally:
            platform.stop()
            controller.stop()
            receiver.shutdown()
    print(f"{args.messages} messages each, one run, side by side:")
    print(f"  SMTP    through notify {notify_mail:8.1f}/s   sent directly {direct_mail:8.1f}/s   ratio {notify_mail / direct_mail:.2f}")
    print(f"  webhook through notify {notify_hooks:8.1f}/s   sent directly {direct_hooks:8.1f}/s   ratio {notify_hooks / direct_hooks:.2f}")


if __name__ == "__main__":
    main()

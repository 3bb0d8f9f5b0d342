"""Notify end to end: a real SMTP server and a real HTTP receiver, both run by the test, faults injected.

Only the broker, the Mongo-wire server and notify run (started through the launcher's own code):
the test publishes the events intake, routing and SLA would, so each rule is exercised on its own,
and it controls the SMTP server (down, 4xx, 5xx) and the webhook receiver (500, 429 Retry-After).
"""

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller

from services.notify.service import SEND_BATCH
from shared import topics
from shared.clock import utc_now
from shared.envelope import new_event
from shared.events import (
    AuthorType,
    Channel,
    Customer,
    Priority,
    SlaBreached,
    SlaClockStarted,
    SlaWarning,
    TicketAssigned,
    TicketCreated,
    TicketMessageAdded,
    TicketReopened,
    TicketSolved,
)
from shared.launcher.platform import Platform, Ports, embedded_environ
from shared.launcher.servers import free_port
from tests.support import RunningPlatform, eventually

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - {kind: acknowledgement, event: support.ticket.created.v1, to: [customer], transactional: true, urgent: true,
     wait_for_sla: first_reply, wait_for_sla_seconds: 1}
  - {kind: agent_reply, event: support.ticket.message_added.v1, when: {author_type: agent, public: true},
     to: [customer], transactional: true, urgent: true}
  - {kind: assignment, event: support.ticket.assigned.v1, to: [agent], transactional: true, urgent: true}
  - {kind: sla_warning, event: support.sla.warning.v1, to: [assignee], transactional: true, urgent: true}
  - {kind: sla_breached, event: support.sla.breached.v1, to: [team, supervisors], transactional: true, urgent: true}
  - {kind: csat_survey, event: support.ticket.solved.v1, to: [customer], delay_seconds: 2,
     cancel_on: [support.ticket.reopened.v1]}
  - {kind: follow_up, event: support.ticket.solved.v1, to: [customer], opt_in: true, delay_seconds: 3,
     cancel_on: [support.ticket.reopened.v1]}
"""
RATE_LIMIT = 3
RATE_WINDOW_SECONDS = 10


# --- the SMTP server and the HTTP receiver the test controls ---------------------------------------


class MailServer:
    """aiosmtpd, keeping what it accepts. `tempfail` answers 451 to every recipient; `reject-…`
    addresses get 550; `busy-…` addresses get 452 twice, then are accepted; a message to a `late-…`
    address is read, kept in `refused` and answered 451 once, then accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list = []
        self.refused: list = []
        self.tempfail = False
        self.busy: dict[str, int] = defaultdict(lambda: 2)
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.tempfail:
            return "451 4.3.0 Try again later"
        if address.startswith("reject-"):
            return "550 5.1.1 No such user"
        if address.startswith("busy-") and self.busy[address] > 0:
            self.busy[address] -= 1
            return "452 4.2.2 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        if message["To"].startswith("late-") and not [m for m in self.refused if m["To"] == message["To"]]:
            self.refused.append(message)
            return "451 4.3.0 Queue full, try again later"
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list:
        return [message for message in list(self.messages) if message["To"] == address]


class WebhookReceiver:
    """A local HTTP server recording every request; `script[path]` lists answers to give first."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answers = receiver.script[self.path]
                status, headers = answers.pop(0) if answers else (200, {})
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "status": status, "at": time.monotonic()}
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str, status: int | None = None) -> list[dict]:
        return [r for r in list(self.requests) if r["path"] == path and (status is None or r["status"] == status)]


class Harness:
    def __init__(self, platform: Platform, mail: MailServer, hooks: WebhookReceiver) -> None:
        self.platform = platform
        self.running = RunningPlatform(platform)
        self.mail = mail
        self.hooks = hooks

    def secret(self, name: str) -> str:
        return (self.platform.data_dir / "secrets" / name.lower()).read_text()

    async def publish(self, topic: str, payload, subject: str) -> object:
        event = new_event(payload, source="tests/notify", subject=subject)
        await self.running.publish(topic, event.to_json(), key=subject.encode())
        return event

    async def publish_event(self, topic: str, event) -> None:
        await self.running.publish(topic, event.to_json(), key=event.subject.encode())

    async def ticket(self, *, email: str | None, language: str | None = None, customer_id: str | None = None, sla_hours=None):
        ticket_id = f"TKT-{uuid.uuid4().hex[:12]}"
        customer = Customer(id=customer_id or f"c-{uuid.uuid4().hex[:8]}", email=email, name="Ann")
        created = TicketCreated(
            ticket_id=ticket_id, channel=Channel.WEB, customer=customer, subject="Charged twice",
            priority=Priority.NORMAL, required_skills=[], created_at=utc_now(), language=language,
        )
        if sla_hours is not None:
            now = utc_now()
            await self.publish(topics.SLA, SlaClockStarted(
                ticket_id=ticket_id, metric="first_reply", target_seconds=sla_hours * 3600, started_at=now,
                due_at=now + timedelta(hours=sla_hours)), ticket_id)
        await self.publish(topics.TICKETS, created, ticket_id)
        return ticket_id

    async def put(self, path: str, body: dict) -> dict:
        async with self.running.client("notify") as notify:
            response = await notify.put(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def deliveries(self, ticket_id: str) -> list[dict]:
        async with self.running.client("notify") as notify:
            response = await notify.get("/v1/notifications", params={"ticket_id": ticket_id})
        assert response.status_code == 200
        return response.json()["notifications"]

    async def all_recorded(self, ticket_id: str, timeout: float = 30) -> list[dict]:
        """The ticket's deliveries once none is pending: the watermark for "no further mail". Notify records
        a send after the mail server took it, and never sends a recorded delivery again."""
        return await self.wait_deliveries(
            ticket_id, lambda found: found and all(d["state"] != "pending" for d in found), timeout
        )

    async def acknowledged(self, ticket_id: str, timeout: float = 30) -> None:
        """Its acknowledgement recorded as sent, so never sent again: the watermark for "no second copy"."""
        await self.wait_deliveries(
            ticket_id, lambda found: any(d["kind"] == "acknowledgement" and d["state"] == "sent" for d in found), timeout
        )

    async def wait_deliveries(self, ticket_id: str, done, timeout: float = 30) -> list[dict]:
        async with asyncio.timeout(timeout):
            while not done(found := await self.deliveries(ticket_id)):
                await asyncio.sleep(0.2)
        return found



@pytest.fixture(scope="module")
def notify_harness(tmp_path_factory) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("notify")
    rules = data_dir / "rules.yaml"
    rules.write_text(RULES)
    mail = MailServer(free_port())
    mail.start()
    hooks = WebhookReceiver()
    environ = embedded_environ(
        SMTP_URL=f"smtp://127.0.0.1:{mail.port}",
        NOTIFY_RULES_PATH=str(rules),
        TEAM_WEBHOOK_URL=f"{hooks.url}/team",
        SUPERVISORS_WEBHOOK_URL=f"{hooks.url}/supervisors",
        SMS_PROVIDER_URL=f"{hooks.url}/sms",
        INTAKE_PUBLIC_URL="https://support.example.com",
        DELIVERY_RETRY_BASE_SECONDS="0.3",
        DELIVERY_RETRY_CAP_SECONDS="1.5",
        DELIVERY_MAX_ATTEMPTS="100",
        DELIVERY_CLAIM_SECONDS="4",
        SENDER_POLL_INTERVAL_SECONDS="0.2",
        RATE_LIMIT_PER_RECIPIENT=str(RATE_LIMIT),
        RATE_LIMIT_WINDOW_SECONDS=str(RATE_WINDOW_SECONDS),
        KAFKA_TOPIC_PARTITIONS="2",
        OUTBOUND_URL_ALLOWLIST="127.0.0.1",  # the test's own webhook receiver; every other internal address stays refused
    )
    platform = Platform(data_dir, Ports.free(), environ=environ)
    try:
        platform.start(["notify"])  # with the broker and Mongo-wire server; the SMTP server is the test's
        yield Harness(platform, mail, hooks)
    finally:
        platform.stop()
        mail.stop()
        hooks.server.shutdown()


def unique_address(prefix: str = "cust") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


# --- the messages ------------------------------------------------------------------------------------


async def test_the_acknowledgement_names_the_first_reply_time_threads_and_arrives_once(notify_harness):
    h = notify_harness
    address = unique_address()
    ticket_id = await h.ticket(email=address, sla_hours=4)

    await h.all_recorded(ticket_id)
    [mail] = h.mail.to(address)

    assert f"[{ticket_id}]" in mail["Subject"] and mail["X-Switchboard-Ticket"] == ticket_id
    assert mail["In-Reply-To"] == mail["References"] == f"<{ticket_id}@switchboard.local>"
    assert "within 4 hours" in mail.get_body(("plain",)).get_content()
    assert "within 4 hours" in mail.get_body(("html",)).get_content()
    [delivery] = await h.deliveries(ticket_id)
    assert (delivery["kind"], delivery["state"], delivery["message_id"]) == ("acknowledgement", "sent", mail["Message-ID"])
    events = await h.running.events(topics.NOTIFICATIONS, until=lambda events: any(
        e["type"] == "support.notification.sent.v1" and e["subject"] == ticket_id for e in events))
    [sent] = [e for e in events if e["type"] == "support.notification.sent.v1" and e["subject"] == ticket_id]
    assert (sent["data"]["notification_id"], sent["data"]["kind"], sent["data"]["channel"]) == (delivery["id"], "acknowledgement", "email")


async def test_without_an_sla_clock_the_acknowledgement_goes_after_the_short_wait_in_the_customers_language(notify_harness):
    h = notify_harness
    address = unique_address()
    ticket_id = await h.ticket(email=address, language="de")

    [mail] = await eventually(lambda: h.mail.to(address))

    assert "Wir haben Ihre Anfrage erhalten" in mail["Subject"] and ticket_id in mail["Subject"]
    assert "so bald wie möglich" in mail.get_body(("plain",)).get_content()


async def test_a_redelivered_event_owes_nothing_new(notify_harness):
    h = notify_harness
    address = unique_address()
    ticket_id = f"TKT-{uuid.uuid4().hex[:12]}"
    event = new_event(
        TicketCreated(ticket_id=ticket_id, channel=Channel.EMAIL, customer=Customer(email=address), subject="Hi",
                      priority=Priority.LOW, required_skills=[], created_at=utc_now()),
        source="tests/notify", subject=ticket_id,
    )
    for _ in range(3):
        await h.publish_event(topics.TICKETS, event)
    await h.publish(topics.TICKETS, TicketMessageAdded(  # the watermark: after the copies, on their partition
        ticket_id=ticket_id, message_id=uuid.uuid4().hex, author_type=AuthorType.AGENT, author_id="ada",
        public=True, body="We are on it.", added_at=utc_now()), ticket_id)

    deliveries = await h.wait_deliveries(ticket_id, lambda found: any(d["kind"] == "agent_reply" for d in found))
    deliveries = await h.all_recorded(ticket_id)

    assert sorted(d["kind"] for d in deliveries) == ["acknowledgement", "agent_reply"]
    assert len(h.mail.to(address)) == 2, "one acknowledgement, whatever the redeliveries, and the reply"


async def test_public_agent_replies_go_to_the_customer_and_internal_notes_do_not(notify_harness):
    h = notify_harness
    address = unique_address()
    ticket_id = await h.ticket(email=address, sla_hours=1)
    await eventually(lambda: h.mail.to(address))
    for public, body in ((False, "internal: customer is a VIP"), (True, "We refunded the second payment.")):
        await h.publish(topics.TICKETS, TicketMessageAdded(
            ticket_id=ticket_id, message_id=uuid.uuid4().hex, author_type=AuthorType.AGENT, author_id="ada",
            public=public, body=body, added_at=utc_now()), ticket_id)

    await h.wait_deliveries(ticket_id, lambda found: any(d["kind"] == "agent_reply" for d in found))
    await h.all_recorded(ticket_id)

    mails = h.mail.to(address)
    assert len(mails) == 2
    reply = mails[1]
    assert reply["Subject"] == f"[{ticket_id}] Re: Charged twice"
    assert reply.get_body(("plain",)).get_content().startswith("We refunded the second payment.")
    assert "VIP" not in "".join(m.get_body(("plain",)).get_content() for m in mails)
    assert reply["In-Reply-To"] == f"<{ticket_id}@switchboard.local>"


async def test_the_assigned_agent_is_told_by_signed_webhook_or_email_as_they_chose(notify_harness):
    h = notify_harness
    hook_agent, mail_agent = f"ada-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    bob = unique_address("bob")
    await h.put(f"/v1/agents/{hook_agent}/contact", {"channel": "webhook", "webhook_url": f"{h.hooks.url}/agents/{hook_agent}", "name": "Ada"})
    await h.put(f"/v1/agents/{mail_agent}/contact", {"channel": "email", "email": bob, "name": "Bob"})
    sms_agent = f"dee-{uuid.uuid4().hex[:6]}"
    await h.put(f"/v1/agents/{sms_agent}/contact", {"channel": "sms", "phone": "+4930123456"})
    first, second, third = await h.ticket(email=None), await h.ticket(email=None), await h.ticket(email=None)
    for ticket_id, agent in ((first, hook_agent), (second, mail_agent), (third, sms_agent)):
        await h.publish(topics.ROUTING, TicketAssigned(ticket_id=ticket_id, agent_id=agent, reason="billing level 3",
                                                       assigned_at=utc_now()), ticket_id)

    [request] = await eventually(lambda: h.hooks.to(f"/agents/{hook_agent}"))
    [mail] = await eventually(lambda: h.mail.to(bob))

    body = request["body"]
    timestamp = request["headers"]["X-Switchboard-Timestamp"]
    key = h.secret("WEBHOOK_SIGNING_KEY").encode()
    assert request["headers"]["X-Switchboard-Signature"] == "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert abs(int(timestamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["ticket_id"] == first and payload["kind"] == "assignment" and "Hi Ada," in payload["text"]
    assert f"[{second}] Assigned to you" in mail["Subject"]
    [sms] = await eventually(lambda: [r for r in h.hooks.to("/sms") if json.loads(r["body"])["notification_id"].endswith(":agent:assignment")
                                      and third in json.loads(r["body"])["text"]])
    assert json.loads(sms["body"])["to"] == "+4930123456" and sms["headers"]["X-Switchboard-Signature"].startswith("sha256=")
    # The customers had no email address: a visible suppression, not silence.
    found = await h.wait_deliveries(first, lambda found: any(d["kind"] == "acknowledgement" for d in found))
    [ack] = [d for d in found if d["kind"] == "acknowledgement"]
    assert (ack["state"], ack["reason"]) == ("suppressed", "the customer has no email address")


async def test_sla_warning_goes_to_the_assignee_and_a_breach_to_team_and_supervisors(notify_harness):
    h = notify_harness
    agent, agent_mail = f"cy-{uuid.uuid4().hex[:6]}", unique_address("cy")
    await h.put(f"/v1/agents/{agent}/contact", {"email": agent_mail})
    ticket_id = await h.ticket(email=None)
    await h.publish(topics.ROUTING, TicketAssigned(ticket_id=ticket_id, agent_id=agent, reason="r", assigned_at=utc_now()), ticket_id)
    await eventually(lambda: h.mail.to(agent_mail))
    now = utc_now()
    await h.publish(topics.SLA, SlaWarning(ticket_id=ticket_id, metric="first_reply", target_seconds=3600, threshold=0.75,
                                           due_at=now + timedelta(minutes=15), remaining_seconds=900, warned_at=now), ticket_id)
    await h.publish(topics.SLA, SlaBreached(ticket_id=ticket_id, metric="first_reply", target_seconds=3600,
                                            due_at=now, breached_at=now), ticket_id)

    warning = (await eventually(lambda: [m for m in h.mail.to(agent_mail) if "SLA warning" in m["Subject"]]))[0]
    team = await eventually(lambda: [r for r in h.hooks.to("/team") if json.loads(r["body"])["ticket_id"] == ticket_id])
    supervisors = await eventually(lambda: [r for r in h.hooks.to("/supervisors") if json.loads(r["body"])["ticket_id"] == ticket_id])

    assert "15 minutes" in warning["Subject"]
    text = json.loads(team[0]["body"])["text"]
    assert f"SLA breached on {ticket_id}" in text and f"Assignee: {agent}" in text
    assert len(team) == len(supervisors) == 1


async def test_the_csat_survey_comes_after_the_delay_with_links_intake_can_verify_and_the_follow_up_if_opted_in(notify_harness):
    h = notify_harness
    address, customer = unique_address(), f"c-{uuid.uuid4().hex[:8]}"
    await h.put(f"/v1/customers/{customer}/preferences", {"opt_in": ["follow_up"]})
    ticket_id = await h.ticket(email=address, customer_id=customer, sla_hours=1)
    await eventually(lambda: h.mail.to(address))
    solved_at = time.monotonic()
    await h.publish(topics.TICKETS, TicketSolved(ticket_id=ticket_id, solved_at=utc_now()), ticket_id)

    survey = (await eventually(lambda: [m for m in h.mail.to(address) if "How did we do" in m["Subject"]]))[0]
    assert time.monotonic() - solved_at >= 1.5, "the survey waits for its delay"
    follow_up = (await eventually(lambda: [m for m in h.mail.to(address) if "How is it going" in m["Subject"]]))[0]

    text = survey.get_body(("plain",)).get_content()
    links = [word for word in text.split() if word.startswith("https://support.example.com/")]
    assert len(links) == 5
    url = urlsplit(links[4])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert url.path == f"/v1/tickets/{ticket_id}/csat" and query["score"] == "5"
    assert int(query["expires"]) > time.time() + 13 * 86400
    key = h.secret("CSAT_SIGNING_KEY").encode()
    assert query["signature"] == hmac.new(key, f"{ticket_id}.{query['expires']}".encode(), hashlib.sha256).hexdigest()
    assert follow_up["X-Switchboard-Ticket"] == ticket_id


async def test_reopening_cancels_the_pending_survey_and_opting_out_suppresses_it_visibly(notify_harness):
    h = notify_harness
    reopened, opted_out = unique_address(), unique_address()
    customer = f"c-{uuid.uuid4().hex[:8]}"
    await h.put(f"/v1/customers/{customer}/preferences", {"opt_out": ["csat_survey", "acknowledgement"]})
    first = await h.ticket(email=reopened, sla_hours=1)
    second = await h.ticket(email=opted_out, customer_id=customer, sla_hours=1)
    await h.publish(topics.TICKETS, TicketSolved(ticket_id=first, solved_at=utc_now()), first)
    await h.publish(topics.TICKETS, TicketReopened(ticket_id=first, reopened_at=utc_now()), first)
    await h.publish(topics.TICKETS, TicketSolved(ticket_id=second, solved_at=utc_now()), second)

    cancelled = await h.wait_deliveries(first, lambda found: any(d["kind"] == "csat_survey" and d["state"] == "suppressed" for d in found))
    refused = await h.wait_deliveries(second, lambda found: any(d["kind"] == "csat_survey" for d in found))
    await asyncio.sleep(3)  # past the survey's delay

    assert [d["reason"] for d in cancelled if d["kind"] == "csat_survey"] == ["cancelled by support.ticket.reopened.v1"]
    assert [d["reason"] for d in refused if d["kind"] == "csat_survey"] == ["the customer opted out of csat_survey"]
    assert not [m for m in h.mail.to(reopened) + h.mail.to(opted_out) if "How did we do" in m["Subject"]]
    assert len(h.mail.to(opted_out)) == 1, "the acknowledgement is transactional: an opt-out does not stop it"
    suppressed = await h.running.events(topics.NOTIFICATIONS, until=lambda events: sum(
        1 for e in events if e["type"] == "support.notification.suppressed.v1" and e["subject"] in (first, second)) >= 2)
    reasons = {e["subject"]: e["data"]["reason"] for e in suppressed if e["type"] == "support.notification.suppressed.v1" and e["data"]["kind"] == "csat_survey"}
    assert reasons == {first: "cancelled by support.ticket.reopened.v1", second: "the customer opted out of csat_survey"}
    async with h.running.client("notify") as notify:
        metrics = (await notify.get("/metrics")).text
    assert 'switchboard_notifications_total{channel="email",kind="csat_survey",outcome="suppressed"}' in metrics


async def test_a_survey_due_in_the_customers_quiet_hours_waits_for_their_end(notify_harness):
    h = notify_harness
    customer = f"c-{uuid.uuid4().hex[:8]}"
    now = utc_now()
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=2)).strftime("%H:%M")
    await h.put(f"/v1/customers/{customer}/preferences", {"quiet_hours": {"start": start, "end": end, "timezone": "UTC"}})
    ticket_id = await h.ticket(email=unique_address(), customer_id=customer, sla_hours=1)
    await h.publish(topics.TICKETS, TicketSolved(ticket_id=ticket_id, solved_at=utc_now()), ticket_id)

    found = await h.wait_deliveries(ticket_id, lambda found: any(d["kind"] == "csat_survey" for d in found))

    [survey] = [d for d in found if d["kind"] == "csat_survey"]
    [ack] = [d for d in await h.wait_deliveries(ticket_id, lambda f: any(d["state"] == "sent" for d in f)) if d["state"] == "sent"]
    assert survey["state"] == "pending" and survey["reason"].startswith("quiet hours until")
    assert survey["due_at"][11:16] == end, "held until the quiet hours end"
    assert ack["kind"] == "acknowledgement", "urgent messages ignore quiet hours"


async def test_past_the_rate_limit_the_non_urgent_messages_come_in_one_digest_per_window(notify_harness):
    h = notify_harness
    address, customer = unique_address(), f"c-{uuid.uuid4().hex[:8]}"
    tickets = [await h.ticket(email=address, customer_id=customer, sla_hours=1) for _ in range(RATE_LIMIT + 2)]
    for ticket_id in tickets:
        await h.publish(topics.TICKETS, TicketSolved(ticket_id=ticket_id, solved_at=utc_now()), ticket_id)

    await eventually(lambda: [m for m in h.mail.to(address) if "updates from" in m["Subject"]], timeout=RATE_WINDOW_SECONDS * 3)
    for ticket_id in tickets:  # the watermark: nothing of theirs is left to send (a digest waits on its first ticket)
        await h.all_recorded(ticket_id)

    mails = h.mail.to(address)
    surveys = [m for m in mails if "How did we do" in m["Subject"]]
    digests = [m for m in mails if "updates from" in m["Subject"]]
    # Windows are fixed, so solving the tickets can straddle the end of one: its digest, then the next's.
    assert 1 <= len(digests) <= 2
    assert len(mails) == len(tickets) + len(surveys) + len(digests)
    text = "".join(digest.get_body(("plain",)).get_content() for digest in digests)
    assert text.count("How did we do") == len(tickets) - len(surveys) >= 1
    held = [t for t in tickets if f"{t}/csat?score=5" in text]
    assert len(held) == len(tickets) - len(surveys), "each held survey's links are in the digest"
    states = [d for t in tickets for d in await h.deliveries(t) if d["kind"] == "csat_survey"]
    assert sum(1 for d in states if d["state"] == "suppressed" and "digest" in d["reason"]) == len(tickets) - len(surveys)


# --- faults ------------------------------------------------------------------------------------------


async def test_mail_queued_while_the_smtp_server_is_down_arrives_once_it_is_back(notify_harness):
    h = notify_harness
    h.mail.stop()
    try:
        addresses = [unique_address("down") for _ in range(5)]
        tickets = [await h.ticket(email=address, sla_hours=2) for address in addresses]
        await h.wait_deliveries(tickets[-1], lambda found: found and found[0]["attempts"] >= 2 and found[0]["last_error"])
    finally:
        h.mail.start()

    for ticket_id in tickets:
        await h.acknowledged(ticket_id)

    assert [len(h.mail.to(address)) for address in addresses] == [1] * 5
    [delivery] = await h.deliveries(tickets[0])
    assert delivery["state"] == "sent" and delivery["attempts"] >= 2


async def test_an_smtp_4xx_is_retried_and_a_5xx_fails_to_the_dead_letter_topic(notify_harness):
    h = notify_harness
    busy, rejected = unique_address("busy"), unique_address("reject")
    busy_ticket = await h.ticket(email=busy, sla_hours=1)
    rejected_ticket = await h.ticket(email=rejected, sla_hours=1)

    await eventually(lambda: h.mail.to(busy))
    [failed] = await h.wait_deliveries(rejected_ticket, lambda found: found and found[0]["state"] == "failed")
    [retried] = await h.wait_deliveries(busy_ticket, lambda found: found and found[0]["state"] == "sent")

    assert retried["attempts"] == 3 and len(h.mail.to(busy)) == 1
    assert failed["attempts"] == 1 and failed["last_error"].startswith("SMTP 550")
    assert "reject-" not in failed["last_error"], "addresses never appear in stored reasons"
    dead = await h.running.read_topic(
        topics.dead_letter(topics.NOTIFICATIONS),
        until=lambda records: any(json.loads(r.value)["subject"] == rejected_ticket for r in records),
    )
    [record] = [r for r in dead if json.loads(r.value)["subject"] == rejected_ticket]
    headers = {name: value.decode() for name, value in record.headers}
    assert headers["dlq-error"].startswith("SMTP 550") and headers["dlq-attempts"] == "1"
    assert headers["dlq-consumer-group"] == "switchboard-notify" and headers["dlq-original-topic"] == topics.NOTIFICATIONS
    assert headers["dlq-notification-id"] == failed["id"] and json.loads(record.value)["type"] == "support.notification.failed.v1"
    failures = await h.running.events(topics.NOTIFICATIONS, until=lambda events: any(
        e["type"] == "support.notification.failed.v1" and e["subject"] == rejected_ticket for e in events))
    [event] = [e for e in failures if e["type"] == "support.notification.failed.v1" and e["subject"] == rejected_ticket]
    assert event["data"]["reason"].startswith("SMTP 550") and event["data"]["attempts"] == 1
    async with h.running.client("notify") as notify:
        metrics = (await notify.get("/metrics")).text
    assert 'switchboard_notifications_total{channel="email",kind="acknowledgement",outcome="failed"}' in metrics


async def test_a_mail_refused_after_its_content_was_read_is_retried_with_the_same_message_id(notify_harness):
    h = notify_harness
    address = unique_address("late")
    ticket_id = await h.ticket(email=address, sla_hours=1)

    [refused] = await eventually(lambda: [m for m in h.mail.refused if m["To"] == address])
    [accepted] = await eventually(lambda: h.mail.to(address))
    [delivery] = await h.wait_deliveries(ticket_id, lambda found: found and found[0]["state"] == "sent")

    assert refused["Message-ID"] == accepted["Message-ID"] == delivery["message_id"], "the receiver can drop a copy"
    assert (refused["Date"], refused["Subject"]) == (accepted["Date"], accepted["Subject"])
    assert delivery["attempts"] == 2


async def test_a_webhook_answering_503_gets_the_retry_with_the_same_idempotency_key(notify_harness):
    h = notify_harness
    agent = f"eve-{uuid.uuid4().hex[:6]}"
    path = f"/agents/{agent}"
    h.hooks.script[path] = [(503, {"Retry-After": "1"})]
    await h.put(f"/v1/agents/{agent}/contact", {"channel": "webhook", "webhook_url": f"{h.hooks.url}{path}", "name": "Eve"})
    ticket_id = await h.ticket(email=None)
    await h.publish(topics.ROUTING, TicketAssigned(ticket_id=ticket_id, agent_id=agent, reason="r", assigned_at=utc_now()), ticket_id)

    await eventually(lambda: h.hooks.to(path, 200))
    found = await h.wait_deliveries(ticket_id, lambda found: any(d["kind"] == "assignment" and d["state"] == "sent" for d in found))

    [assignment] = [d for d in found if d["kind"] == "assignment"]
    tries = h.hooks.to(path)
    assert [r["status"] for r in tries] == [503, 200]
    assert [r["headers"]["Idempotency-Key"] for r in tries] == [assignment["id"]] * 2
    assert tries[0]["body"] == tries[1]["body"]


async def test_a_webhook_answering_500_then_429_gets_the_message_once_after_the_retry_after(notify_harness):
    h = notify_harness
    ticket_id = await h.ticket(email=None)
    h.hooks.script["/team"] = [(500, {}), (429, {"Retry-After": "2"})]
    now = utc_now()
    await h.publish(topics.SLA, SlaBreached(ticket_id=ticket_id, metric="resolution", target_seconds=60, due_at=now,
                                            breached_at=now), ticket_id)

    accepted = await eventually(lambda: [r for r in h.hooks.to("/team", 200) if json.loads(r["body"])["ticket_id"] == ticket_id])
    await h.all_recorded(ticket_id)  # the team's delivery recorded as sent: it is tried no more

    tries = [r for r in h.hooks.to("/team") if json.loads(r["body"])["ticket_id"] == ticket_id]
    assert [r["status"] for r in tries] == [500, 429, 200]
    assert tries[2]["at"] - tries[1]["at"] >= 1.9, "Retry-After was honoured"
    assert len({(r["headers"]["X-Switchboard-Notification-Id"], r["headers"]["Idempotency-Key"]) for r in tries}) == 1
    assert len(accepted) == 1
    [team] = [d for d in await h.deliveries(ticket_id) if d["recipient_role"] == "team"]
    assert (team["state"], team["attempts"]) == ("sent", 3)


async def test_notify_killed_mid_stream_delivers_every_message_exactly_once(notify_harness):
    h = notify_harness
    h.mail.tempfail = True  # every send fails for now, so no message is in flight when notify dies
    addresses = [unique_address("crash") for _ in range(16)]
    surveyed = unique_address("delayed")
    solved = await h.ticket(email=surveyed, sla_hours=1)
    await h.publish(topics.TICKETS, TicketSolved(ticket_id=solved, solved_at=utc_now()), solved)
    await h.wait_deliveries(solved, lambda found: any(d["kind"] == "csat_survey" and d["state"] == "pending" for d in found))
    tickets = []
    try:
        for number, address in enumerate(addresses):
            if number == 8:
                h.platform.kill("notify")
            tickets.append(await h.ticket(email=address, sla_hours=1))
            await asyncio.sleep(0.05)
        await asyncio.to_thread(h.platform.respawn, "notify")
        await asyncio.sleep(2)
    finally:
        h.mail.tempfail = False

    for ticket_id in tickets:
        await h.acknowledged(ticket_id, timeout=45)

    counts = [len(h.mail.to(address)) for address in addresses]
    assert counts == [1] * len(addresses)
    # The survey was still waiting for its delay when notify died: it is stored, so it still goes, once.
    subjects = sorted(m["Subject"].split("] ")[1] for m in await eventually(lambda: len(h.mail.to(surveyed)) >= 2 and h.mail.to(surveyed)))
    assert subjects == ["How did we do?", "We received your request: Charged twice"]
    async with h.running.client("notify") as notify:
        metrics = (await notify.get("/metrics")).text
    assert 'switchboard_notifications_total{channel="email",kind="acknowledgement",outcome="sent"}' in metrics


@pytest.mark.timeout(600)  # three kills and restarts of notify: minutes on a busy 2-core machine
async def test_notify_killed_while_sending_repeats_only_unrecorded_sends_with_the_same_message_id(notify_harness):
    """Each send's outcome is recorded as soon as it returns, so a SIGKILL in the middle of a burst repeats
    only the sends the server had accepted but notify had not yet recorded, each at most once."""
    h = notify_harness
    kills = 3
    addresses = [unique_address("burst") for _ in range(90)]
    h.mail.tempfail = True  # the burst piles up and then goes out at once, SEND_BATCH sends at a time
    try:
        tickets = [await h.ticket(email=address, sla_hours=1) for address in addresses]
        for ticket_id in tickets:
            await h.wait_deliveries(ticket_id, lambda found: found and found[0]["attempts"] >= 1)
    finally:
        h.mail.tempfail = False

    def arrived() -> int:
        return len({message["To"] for message in list(h.mail.messages)} & set(addresses))

    for kill in range(1, kills + 1):
        await eventually(lambda kill=kill: arrived() >= kill * len(addresses) // (kills + 1), timeout=60, interval=0.02)
        h.platform.kill("notify")
        await asyncio.to_thread(h.platform.respawn, "notify")
    for ticket_id in tickets:  # the watermark: once recorded as sent, a delivery is never claimed again
        await h.wait_deliveries(ticket_id, lambda found: found[0]["state"] == "sent", timeout=60)

    copies = [h.mail.to(address) for address in addresses]
    repeats = sum(len(mails) - 1 for mails in copies)
    print(f"{repeats} repeats in {kills} kills of a {len(addresses)}-mail burst ({repeats / kills:.1f} a kill)")
    assert all(1 <= len(mails) <= 1 + kills for mails in copies), "a kill repeats a delivery at most once"
    assert repeats <= kills * SEND_BATCH, "only sends in flight at a kill may repeat"
    assert all(len({m["Message-ID"] for m in mails}) == 1 for mails in copies), "a repeat is recognisable"


async def test_bad_contacts_and_preferences_get_422_saying_what_is_wrong_and_no_key_gets_401(notify_harness):
    async with notify_harness.running.client("notify") as notify:
        no_address = await notify.put("/v1/agents/ada/contact", json={"channel": "webhook"})
        bad_phone = await notify.put("/v1/agents/ada/contact", json={"channel": "sms", "phone": "12"})
        bad_zone = await notify.put("/v1/customers/c1/preferences", json={"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}})
        unknown_field = await notify.put("/v1/customers/c1/preferences", json={"opt_out": ["csat_survey"], "shout": True})
        misspelt = await notify.put("/v1/customers/c1/preferences", json={"opt_out": ["csat_surveys"], "opt_in": ["follow_up"]})
        missing = await notify.get("/v1/agents/nobody-at-all/contact")
        notify.headers.pop("Authorization")
        anonymous = await notify.put("/v1/customers/c1/preferences", json={})

    assert no_address.status_code == 422 and "no webhook address" in no_address.json()["message"]
    assert bad_phone.status_code == 422 and "invalid phone number" in bad_phone.json()["message"]
    assert bad_zone.status_code == 422 and "unknown timezone" in bad_zone.json()["message"]
    assert unknown_field.status_code == 422 and "shout" in unknown_field.json()["message"]
    assert misspelt.status_code == 422 and misspelt.json()["message"].startswith("unknown kinds: csat_surveys; known: ")
    assert missing.status_code == 404
    assert anonymous.status_code == 401


async def test_a_webhook_url_reaching_an_internal_address_gets_422_naming_the_reason_and_is_not_saved(notify_harness):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    async with notify_harness.running.client("notify") as notify:
        metadata = await notify.put(f"/v1/agents/{agent}/contact", json={"channel": "webhook", "webhook_url": "http://169.254.169.254/latest"})
        mapped = await notify.put(f"/v1/agents/{agent}/contact", json={"channel": "webhook", "webhook_url": "http://[::ffff:10.0.0.1]:8080/"})
        saved = await notify.get(f"/v1/agents/{agent}/contact")

    assert metadata.status_code == 422, metadata.text
    assert metadata.json()["message"] == (
        "webhook_url host 169.254.169.254 is a link-local address; set OUTBOUND_URL_ALLOWLIST to permit it"
    )
    assert mapped.status_code == 422 and "host ::ffff:a00:1 is a private address" in mapped.json()["message"]
    assert saved.status_code == 404


async def test_two_notify_replicas_send_every_message_exactly_once(notify_harness):
    """Two senders race for the same due deliveries (claims are conditional updates), and the
    consumers share the partitions; every customer still gets one acknowledgement."""
    h = notify_harness
    replica, _ = await asyncio.to_thread(h.platform.start_replica, "notify")
    addresses = [unique_address("pair") for _ in range(20)]
    h.mail.tempfail = True  # deliveries pile up, due at once, so both replicas try to claim them together
    try:
        tickets = [await h.ticket(email=address, sla_hours=1) for address in addresses]
        for ticket_id in tickets:
            await h.wait_deliveries(ticket_id, lambda found: any(d["attempts"] >= 1 for d in found))
    finally:
        h.mail.tempfail = False

    try:
        for ticket_id in tickets:
            await h.acknowledged(ticket_id, timeout=45)
    finally:
        await asyncio.to_thread(h.platform.terminate, replica)

    assert [len(h.mail.to(address)) for address in addresses] == [1] * len(addresses)

"""Notify's use cases on a fake unit of work: what each consumed event leaves owed (the planner's decisions
stored as deliveries, held, released, suppressed or cancelled), and how the sender claims what is due,
records each outcome and dead-letters what failed for good."""

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from services.notify.domain import Delivery, DeliveryState, QuietHours, RetryPolicy, SendFailure
from services.notify.planner import AgentContact, PlanConfig, Preferences, TicketView
from services.notify.repository import DeadLetter
from services.notify.rules import load_rules
from services.notify.service import SEND_BATCH, Notifications, NotifyMetrics
from services.notify.templates import Templates
from shared import topics
from shared.clock import to_ms, utc_now
from shared.envelope import Envelope, new_event
from shared.events import (
    Channel,
    Customer,
    Priority,
    SlaClockStarted,
    TicketAssigned,
    TicketCreated,
    TicketReopened,
    TicketSolved,
)
from shared.signing import verify_nps
from tests.fakes import FakeTransaction, FakeUnitOfWork
from tests.support import DeadLetterSink

TICKET = "TKT-notify-1"
SIGNING_KEY = "k3y"
RULES = load_rules()
TEMPLATES = Templates(kinds=RULES.kinds)


@dataclass
class NotifyStore:
    """What notify's collections hold, kept between the fake transactions."""

    deliveries: dict[str, Delivery] = field(default_factory=dict)
    claims: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Delivery id -> (claimed until, replica)."""
    dead_letters: dict[str, dict] = field(default_factory=dict)
    tickets: dict[str, dict] = field(default_factory=dict)
    contacts: dict[str, AgentContact] = field(default_factory=dict)
    preferences: dict[str, Preferences] = field(default_factory=dict)
    customer_limits: dict[str, dict] = field(default_factory=dict)


def _untouched(delivery: Delivery | None) -> bool:
    return delivery is not None and delivery.state is DeliveryState.PENDING and delivery.attempts == 0


class FakeOwedDeliveries:
    """`OwedDeliveries`: deliveries as the consumer decides them and the sender records them."""

    def __init__(self, store: NotifyStore) -> None:
        self._store = store
        self._deliveries = store.deliveries

    async def load(self, delivery_ids) -> None:
        return None

    async def get(self, delivery_id: str) -> Delivery | None:
        return self._deliveries.get(delivery_id)

    async def add_if_absent(self, delivery: Delivery) -> bool:
        return self._deliveries.setdefault(delivery.id, delivery) is delivery

    async def replace_pending(self, delivery: Delivery) -> bool:
        if not _untouched(self._deliveries.get(delivery.id)):
            return False
        self._deliveries[delivery.id] = delivery
        return True

    async def suppress(self, delivery: Delivery, reason: str) -> bool:
        return await self.replace_pending(
            self._deliveries[delivery.id].model_copy(update={"state": DeliveryState.SUPPRESSED, "reason": reason})
        )

    async def mark_sent(self, delivery: Delivery) -> bool:
        if self._store.deliveries[delivery.id].state is not DeliveryState.PENDING:
            return False
        self._store.deliveries[delivery.id] = delivery
        self._store.claims.pop(delivery.id, None)
        return True

    async def record_failure(self, delivery: Delivery, dead_letter: str | None = None) -> bool:
        stored = self._store.deliveries[delivery.id]
        if stored.state is not DeliveryState.PENDING or stored.attempts != delivery.attempts:
            return False
        self._store.deliveries[delivery.id] = delivery
        self._store.claims.pop(delivery.id, None)
        if dead_letter is not None:
            self._store.dead_letters[delivery.id] = {"value": dead_letter, "published": False}
        return True

    async def count_recent(self, recipient: str, since_ms: int) -> int:
        counted = (DeliveryState.PENDING, DeliveryState.SENT)
        return sum(
            d.recipient == recipient and to_ms(d.created_at) >= since_ms and d.state in counted and d.kind != "digest"
            for d in self._deliveries.values()
        )

    async def held(self, delivery_ids) -> list[Delivery]:
        return [d for id_ in delivery_ids if _untouched(d := self._deliveries.get(id_)) and d.awaiting]

    async def pending_of_kinds(self, ticket_id: str, kinds: list[str]) -> list[Delivery]:
        return [d for d in self._deliveries.values() if _untouched(d) and d.ticket_id == ticket_id and d.kind in kinds]


class FakeDeliveries:
    """`DeliveryRepository`: deliveries as the sender claims them and the dead-letter relay publishes them."""

    def __init__(self, store: NotifyStore) -> None:
        self._store = store

    def _due(self, now_ms: int) -> list[Delivery]:
        return sorted(
            (
                d for d in self._store.deliveries.values()
                if d.state is DeliveryState.PENDING and to_ms(d.next_attempt_at) <= now_ms
                and self._store.claims.get(d.id, (0, None))[0] <= now_ms
            ),
            key=lambda d: d.next_attempt_at,
        )

    async def any_due(self, now_ms: int) -> bool:
        return bool(self._due(now_ms))

    async def claim_due(self, now_ms: int, claim_until_ms: int, limit: int, *, replica: str) -> list[Delivery]:
        claimed = [d.model_copy(update={"attempts": d.attempts + 1}) for d in self._due(now_ms)[:limit]]
        for delivery in claimed:
            self._store.deliveries[delivery.id] = delivery
            self._store.claims[delivery.id] = (claim_until_ms, replica)
        return claimed

    async def release_claims_of(self, replica: str) -> int:
        released = [id_ for id_, (_, holder) in self._store.claims.items() if holder == replica]
        for id_ in released:
            del self._store.claims[id_]
        return len(released)

    async def has_unpublished_dead_letters(self) -> bool:
        return any(not letter["published"] for letter in self._store.dead_letters.values())

    async def unpublished_dead_letters(self, limit: int) -> list[DeadLetter]:
        waiting = [(id_, letter) for id_, letter in self._store.dead_letters.items() if not letter["published"]]
        return [
            DeadLetter(id_, self._store.deliveries[id_].ticket_id, letter["value"],
                       self._store.deliveries[id_].last_error or "", self._store.deliveries[id_].attempts)
            for id_, letter in waiting[:limit]
        ]

    async def dead_letter_published(self, delivery_id: str) -> None:
        self._store.dead_letters[delivery_id]["published"] = True


class FakeTicketViews:
    def __init__(self, store: NotifyStore) -> None:
        self._tickets = store.tickets

    async def load(self, ticket_ids) -> None:
        return None

    async def get(self, ticket_id: str) -> TicketView | None:
        fields = self._tickets.get(ticket_id)
        return TicketView(ticket_id=ticket_id, **fields) if fields is not None else None

    async def update(self, ticket_id: str, fields: dict) -> None:
        self._tickets.setdefault(ticket_id, {}).update(fields)


class FakeById:
    """`Contacts` or `PreferenceStore`: documents by id, as the API stored them."""

    def __init__(self, documents: dict) -> None:
        self._documents = documents

    async def load(self, ids) -> None:
        return None

    async def get(self, id_: str | None):
        return self._documents.get(id_)


class FakeCustomerLimits:
    """`CustomerLimits`: the delivery holding each customer's period, and its end, as the conditional write keeps them."""

    def __init__(self, store: NotifyStore) -> None:
        self._limits = store.customer_limits

    async def load(self, keys) -> None:
        return None

    async def take(self, key: str, delivery_id: str, *, due_ms: int, until_ms: int) -> bool:
        current = self._limits.get(key)
        if current is not None and current["delivery_id"] == delivery_id:
            return True
        if current is not None and current["until_ms"] > due_ms:
            return False
        self._limits[key] = {"delivery_id": delivery_id, "until_ms": until_ms}
        return True

    async def release(self, key: str, delivery_id: str) -> None:
        if self._limits.get(key, {}).get("delivery_id") == delivery_id:
            self._limits[key]["until_ms"] = 0


class FakeNotifyTransaction(FakeTransaction):
    def __init__(self, store: NotifyStore) -> None:
        super().__init__()
        self.deliveries = FakeDeliveries(store)
        self.owed = FakeOwedDeliveries(store)
        self.tickets = FakeTicketViews(store)
        self.contacts = FakeById(store.contacts)
        self.preferences = FakeById(store.preferences)
        self.customer_limits = FakeCustomerLimits(store)


class RecordingSender:
    """Takes every delivery, or fails each with `failure`."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []
        self.failure: SendFailure | None = None

    async def send(self, delivery: Delivery) -> None:
        if self.failure is not None:
            raise self.failure
        self.sent.append(delivery)


@pytest.fixture
def store() -> NotifyStore:
    return NotifyStore()


@pytest.fixture
def uow(store) -> FakeUnitOfWork:
    return FakeUnitOfWork(lambda: FakeNotifyTransaction(store))


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def dead_letters() -> DeadLetterSink:
    return DeadLetterSink()


@pytest.fixture
def notifications(uow, sender, dead_letters) -> Notifications:
    return Notifications(
        uow,
        "switchboard/notify",
        rules=RULES,
        render=TEMPLATES.render,
        channels=sender,
        retry=RetryPolicy(max_attempts=3, base=timedelta(seconds=1)),
        poll_interval_seconds=0.01,
        config=PlanConfig(
            csat_signing_key=SIGNING_KEY,
            intake_public_url="https://help.example.com",
            survey_kinds=TEMPLATES.kinds_using("csat_links") | TEMPLATES.kinds_using("nps_links"),
            nps_kinds=TEMPLATES.kinds_using("nps_links"),
        ),
        metrics=NotifyMetrics(CollectorRegistry()),
        dead_letters=dead_letters,
        replica="notify-test:8004",
    )


async def consume(uow: FakeUnitOfWork, notifications: Notifications, payload) -> Envelope:
    event = new_event(payload, source="switchboard/tests", subject=payload.ticket_id)
    await uow.run(lambda tx: notifications.on_event(tx, event))
    return event


def created(ticket_id: str = TICKET) -> TicketCreated:
    return TicketCreated(ticket_id=ticket_id, channel=Channel.WEB, subject="Refund", priority=Priority.NORMAL,
                         customer=Customer(id="cust-1", email="ann@example.com", name="Ann"), required_skills=[],
                         created_at=utc_now())


def of_kind(store: NotifyStore, kind: str) -> list[Delivery]:
    return [delivery for delivery in store.deliveries.values() if delivery.kind == kind]


async def test_a_new_ticket_owes_its_customer_an_acknowledgement_held_for_the_first_reply_clock(
    uow, notifications, store
):
    event = await consume(uow, notifications, created())

    (acknowledgement,) = store.deliveries.values()
    assert acknowledgement.id == f"{event.id}:customer:acknowledgement"
    assert (acknowledgement.recipient, acknowledgement.state) == ("ann@example.com", DeliveryState.PENDING)
    assert acknowledgement.awaiting == "sla:first_reply"
    assert store.tickets[TICKET]["held"] == [acknowledgement.id], "the clock's event finds it by id"
    assert store.tickets[TICKET]["subject"] == "Refund"
    assert uow.published == []


async def test_the_first_reply_clock_releases_the_held_acknowledgement_with_its_reply_time(uow, notifications, store):
    await consume(uow, notifications, created())
    now = utc_now()

    await consume(uow, notifications, SlaClockStarted(ticket_id=TICKET, metric="first_reply", target_seconds=4 * 3600,
                                                      started_at=now, due_at=now + timedelta(hours=4)))

    (acknowledgement,) = store.deliveries.values()
    assert acknowledgement.awaiting is None and acknowledgement.next_attempt_at <= utc_now()
    assert "4 hours" in acknowledgement.text
    assert store.tickets[TICKET]["held"] == []


async def test_an_event_delivered_again_owes_nothing_new(uow, notifications, store):
    event = new_event(created(), source="switchboard/tests", subject=TICKET)

    for _ in range(2):
        await uow.run(lambda tx: notifications.on_event(tx, event))

    assert len(store.deliveries) == 1


async def test_a_kind_the_customer_opted_out_of_is_kept_suppressed_and_announced(uow, notifications, store):
    store.preferences["cust-1"] = Preferences(opt_out=["csat_survey"])
    await consume(uow, notifications, created())

    solved = await consume(uow, notifications, TicketSolved(ticket_id=TICKET, solved_at=utc_now()))

    (survey,) = of_kind(store, "csat_survey")
    assert survey.state is DeliveryState.SUPPRESSED and "opted out" in survey.reason
    announced = {event.data.kind: event for event in uow.events_of_type("support.notification.suppressed.v1")}
    assert (announced["csat_survey"].data.notification_id, announced["csat_survey"].causationid) == (
        survey.id,
        str(solved.id),
    )
    assert "follow_up" in announced, "an opt-in kind the customer did not ask for is suppressed too"


async def test_a_reopen_cancels_the_survey_still_waiting_to_go(uow, notifications, store):
    await consume(uow, notifications, created())
    await consume(uow, notifications, TicketSolved(ticket_id=TICKET, solved_at=utc_now()))
    (survey,) = of_kind(store, "csat_survey")
    assert survey.state is DeliveryState.PENDING and survey.next_attempt_at > utc_now() + timedelta(hours=23)

    await consume(uow, notifications, TicketReopened(ticket_id=TICKET, reopened_at=utc_now()))

    (survey,) = of_kind(store, "csat_survey")
    assert (survey.state, survey.reason) == (DeliveryState.SUPPRESSED, "cancelled by support.ticket.reopened.v1")
    cancelled = {event.data.kind: event.data.notification_id for event in uow.events_of_type("support.notification.suppressed.v1")
                 if event.data.reason.startswith("cancelled")}
    assert cancelled == {"csat_survey": survey.id, "nps_survey": of_kind(store, "nps_survey")[0].id}


async def assignment_owed(uow, notifications, store) -> Envelope:
    store.contacts["agent-7"] = AgentContact(email="bo@example.com", name="Bo")
    await consume(uow, notifications, created())
    return await consume(uow, notifications, TicketAssigned(ticket_id=TICKET, agent_id="agent-7", reason="best match",
                                                            assigned_at=utc_now()))


async def test_what_is_due_is_claimed_sent_and_recorded_as_caused_by_its_event(uow, notifications, store, sender):
    assigned = await assignment_owed(uow, notifications, store)

    assert await notifications.send_due() == 1

    (delivery,) = sender.sent
    assert (delivery.kind, delivery.recipient, delivery.attempts) == ("assignment", "bo@example.com", 1)
    assert store.deliveries[delivery.id].state is DeliveryState.SENT
    (announced,) = uow.events_of_type("support.notification.sent.v1")
    assert (announced.correlationid, announced.causationid) == (assigned.correlationid, str(assigned.id))
    assert await notifications.send_due() == 0, "nothing is sent twice"


async def test_a_backlog_goes_out_in_one_call_with_never_more_than_a_batch_sent_and_unrecorded(
    uow, notifications, store, sender
):
    """A full round claims the next batch while its own records wait, and the next round's sends start only
    once those records are stored: what a crash could repeat stays within one batch."""
    store.contacts["agent-7"] = AgentContact(email="bo@example.com", name="Bo")
    backlog = 2 * SEND_BATCH + 5
    for number in range(backlog):
        await consume(uow, notifications, TicketAssigned(ticket_id=f"TKT-{number}", agent_id="agent-7",
                                                         reason="best match", assigned_at=utc_now()))
    unrecorded_at_each_send = []
    take = sender.send

    async def send_after_a_turn(delivery: Delivery) -> None:
        await asyncio.sleep(0)  # the records of sends that already returned get their turn
        unrecorded_at_each_send.append(sum(store.deliveries[sent.id].state is DeliveryState.PENDING for sent in sender.sent))
        await take(delivery)

    sender.send = send_after_a_turn

    assert await notifications.send_due() == backlog

    assert sorted(delivery.ticket_id for delivery in sender.sent) == sorted(f"TKT-{number}" for number in range(backlog))
    assert all(delivery.state is DeliveryState.SENT for delivery in of_kind(store, "assignment"))
    assert max(unrecorded_at_each_send) < SEND_BATCH
    assert await notifications.send_due() == 0, "nothing is sent twice"


async def test_a_send_that_fails_for_now_is_tried_again_later(uow, notifications, store, sender):
    await assignment_owed(uow, notifications, store)
    sender.failure = SendFailure("421 try later", permanent=False)

    await notifications.send_due()

    (delivery,) = of_kind(store, "assignment")
    assert (delivery.state, delivery.last_error) == (DeliveryState.PENDING, "421 try later")
    assert delivery.next_attempt_at > utc_now() and store.dead_letters == {}
    assert uow.events_of_type("support.notification.failed.v1") == []


async def test_a_send_that_fails_for_good_is_announced_and_dead_lettered_once(uow, notifications, store, sender, dead_letters):
    await assignment_owed(uow, notifications, store)
    sender.failure = SendFailure("550 no such mailbox", permanent=True)

    await notifications.send_due()

    (delivery,) = of_kind(store, "assignment")
    assert delivery.state is DeliveryState.FAILED
    (failed,) = uow.events_of_type("support.notification.failed.v1")
    assert await notifications.relay_dead_letters() == 1
    (parked,) = dead_letters.dead_letters
    assert parked["topic"] == topics.NOTIFICATIONS and str(failed.id).encode() in parked["value"]
    assert (parked["error"], parked["details"]) == ("550 no such mailbox", {"dlq-notification-id": delivery.id})
    assert await notifications.relay_dead_letters() == 0


# --- the NPS survey: once per customer every 90 days --------------------------------------------------

NPS_PERIOD = timedelta(days=90)


async def solve(uow, notifications, ticket_id: str) -> Envelope:
    await consume(uow, notifications, created(ticket_id))
    return await consume(uow, notifications, TicketSolved(ticket_id=ticket_id, solved_at=utc_now()))


def nps_of(store: NotifyStore, ticket_id: str) -> Delivery:
    (survey,) = [delivery for delivery in of_kind(store, "nps_survey") if delivery.ticket_id == ticket_id]
    return survey


async def test_a_solved_ticket_owes_its_customer_an_nps_survey_a_week_later_with_a_signed_link_per_score(
    uow, notifications, store
):
    before = utc_now()
    solved = await solve(uow, notifications, "TKT-nps-1")

    survey = nps_of(store, "TKT-nps-1")
    assert (survey.state, survey.recipient, survey.recipient_id) == (DeliveryState.PENDING, "ann@example.com", "cust-1")
    assert before + timedelta(days=7) <= survey.next_attempt_at <= utc_now() + timedelta(days=7)
    assert survey.subject == "How likely are you to recommend us?"
    links = survey.context["nps_links"]
    assert list(links) == [str(score) for score in range(11)] and all(link in survey.text and link.replace("&", "&amp;") in survey.html for link in links.values())
    url = urlsplit(links["9"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert (url.scheme, url.netloc, url.path) == ("https", "help.example.com", "/v1/customers/cust-1/nps")
    assert (query["score"], query["ticket_id"], query["survey"]) == ("9", "TKT-nps-1", survey.context["survey_id"])
    verify_nps(SIGNING_KEY, query["survey"], "cust-1", "TKT-nps-1", int(query["expires"]), query["signature"],
               now=utc_now().timestamp())
    assert int(query["expires"]) >= (survey.next_attempt_at + timedelta(days=13)).timestamp()
    await uow.run(lambda tx: notifications.on_event(tx, solved))
    assert nps_of(store, "TKT-nps-1") == survey, "the same event delivered again plans nothing new"
    assert store.customer_limits["nps_survey:cust-1"] == {
        "delivery_id": survey.id, "until_ms": to_ms(survey.next_attempt_at + NPS_PERIOD)
    }


async def test_another_solved_ticket_of_the_customer_within_90_days_gets_no_second_survey_and_says_why(
    uow, notifications, store
):
    await solve(uow, notifications, "TKT-nps-1")
    solved = await solve(uow, notifications, "TKT-nps-2")

    first, second = nps_of(store, "TKT-nps-1"), nps_of(store, "TKT-nps-2")
    assert first.state is DeliveryState.PENDING
    assert (second.state, second.reason) == (
        DeliveryState.SUPPRESSED,
        "at most one nps_survey per customer every 90 days: another is sent or due within that",
    )
    (announced,) = [e for e in uow.events_of_type("support.notification.suppressed.v1") if e.data.kind == "nps_survey"]
    assert (announced.subject, announced.causationid, announced.data.reason) == ("TKT-nps-2", str(solved.id), second.reason)
    assert store.customer_limits["nps_survey:cust-1"]["delivery_id"] == first.id


async def test_once_the_period_has_passed_the_next_solved_ticket_owes_a_survey_again(uow, notifications, store):
    store.customer_limits["nps_survey:cust-1"] = {
        "delivery_id": "an-old-one", "until_ms": to_ms(utc_now() + timedelta(days=7) - timedelta(minutes=1))
    }

    await solve(uow, notifications, "TKT-nps-3")

    survey = nps_of(store, "TKT-nps-3")
    assert survey.state is DeliveryState.PENDING
    assert store.customer_limits["nps_survey:cust-1"]["delivery_id"] == survey.id


async def test_a_reopen_cancels_the_waiting_survey_and_frees_the_period_for_the_next_solve(uow, notifications, store):
    await solve(uow, notifications, "TKT-nps-1")
    cancelled = nps_of(store, "TKT-nps-1")

    await consume(uow, notifications, TicketReopened(ticket_id="TKT-nps-1", reopened_at=utc_now()))
    await consume(uow, notifications, TicketSolved(ticket_id="TKT-nps-1", solved_at=utc_now()))

    surveys = sorted(of_kind(store, "nps_survey"), key=lambda d: d.created_at)
    assert [(d.id == cancelled.id, d.state) for d in surveys] == [
        (True, DeliveryState.SUPPRESSED), (False, DeliveryState.PENDING)
    ]
    assert store.customer_limits["nps_survey:cust-1"]["delivery_id"] == surveys[1].id


async def test_a_customer_who_opted_out_gets_no_survey_and_takes_no_period(uow, notifications, store):
    store.preferences["cust-1"] = Preferences(opt_out=["nps_survey"])

    await solve(uow, notifications, "TKT-nps-1")

    survey = nps_of(store, "TKT-nps-1")
    assert (survey.state, survey.reason) == (DeliveryState.SUPPRESSED, "the customer opted out of nps_survey")
    assert store.customer_limits == {}


async def test_the_survey_waits_for_the_end_of_quiet_hours_and_its_period_counts_from_then(uow, notifications, store):
    due = utc_now() + timedelta(days=7)
    store.preferences["cust-1"] = Preferences(
        quiet_hours=QuietHours(start=(due - timedelta(hours=1)).time(), end=(due + timedelta(hours=1)).time().replace(second=0, microsecond=0))
    )

    await solve(uow, notifications, "TKT-nps-1")

    survey = nps_of(store, "TKT-nps-1")
    assert survey.state is DeliveryState.PENDING and survey.reason.startswith("quiet hours until")
    assert survey.next_attempt_at.time() == store.preferences["cust-1"].quiet_hours.end
    assert store.customer_limits["nps_survey:cust-1"]["until_ms"] == to_ms(survey.next_attempt_at + NPS_PERIOD)

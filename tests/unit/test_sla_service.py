"""SLA's use cases on a fake unit of work: which clocks each ticket event starts, pauses or fulfils, what
the timers announce when a target passes, and what is refused (with a reason) before anything is written."""

from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from services.sla.domain import Clock, Metric, SlaRules, TicketRecord
from services.sla.metrics import SlaMetrics
from services.sla.policy import load_policies
from services.sla.service import Sla
from services.sla.timers import Timers, TimerSettings
from shared.clock import to_ms, utc_now
from shared.consumer import RejectedEvent
from shared.envelope import new_event
from shared.events import (
    Channel,
    Customer,
    CustomerTier,
    Priority,
    TicketClosed,
    TicketCreated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketStatusChanged,
    TicketTagsChanged,
)
from tests.fakes import FakeTransaction, FakeUnitOfWork

TICKET = "TKT-fake-1"
NOW = utc_now()


@dataclass
class SlaStore:
    """What SLA's collections hold, kept between the fake transactions."""

    tickets: dict[str, TicketRecord] = field(default_factory=dict)
    clocks: dict[str, Clock] = field(default_factory=dict)
    live: int = 0


class FakeClocks:
    """The `SlaRepository` methods the use cases call. Like the real one, a write names the version it read,
    and a queued write of a version no longer stored would fail the transaction."""

    def __init__(self, store: SlaStore) -> None:
        self._store = store

    async def prefetch(self, ticket_ids) -> None:
        return None

    async def ticket(self, ticket_id: str) -> TicketRecord | None:
        return self._store.tickets.get(ticket_id)

    async def clocks_of(self, ticket_id: str) -> dict[Metric, Clock]:
        return {clock.metric: clock for clock in self._store.clocks.values() if clock.ticket_id == ticket_id}

    async def clocks_by_id(self, clock_ids: list[str]) -> dict[str, Clock]:
        return {clock_id: self._store.clocks[clock_id] for clock_id in clock_ids if clock_id in self._store.clocks}

    def save_ticket_later(self, ticket: TicketRecord) -> TicketRecord:
        stored_version = self._store.tickets[ticket.ticket_id].version if ticket.ticket_id in self._store.tickets else 0
        assert stored_version == ticket.version, "the queued write would fail the transaction"
        self._store.tickets[ticket.ticket_id] = replace(ticket, version=ticket.version + 1)
        return self._store.tickets[ticket.ticket_id]

    def save_clock_later(self, clock: Clock) -> Clock:
        assert self._version(clock) == clock.version, "the queued write would fail the transaction"
        self._store.clocks[clock.id] = replace(clock, version=clock.version + 1)
        return self._store.clocks[clock.id]

    def add_live_later(self, delta: int) -> None:
        self._store.live += delta

    async def due_before(self, until_ms: int, limit: int) -> list[tuple[int, str, int]]:
        due = [(clock.next_fire_ms, clock.id, clock.version) for clock in self._store.clocks.values()
               if clock.next_fire_ms is not None and clock.next_fire_ms <= until_ms]
        return sorted(due)[:limit]

    async def save_clocks(self, clocks: list[Clock]) -> list[Clock] | None:
        if any(self._version(clock) != clock.version for clock in clocks):
            return None
        return [self.save_clock_later(clock) for clock in clocks]

    def _version(self, clock: Clock) -> int:
        stored = self._store.clocks.get(clock.id)
        return stored.version if stored else 0


class FakeSlaTransaction(FakeTransaction):
    def __init__(self, store: SlaStore) -> None:
        super().__init__()
        self.clocks = FakeClocks(store)


@pytest.fixture
def store() -> SlaStore:
    return SlaStore()


@pytest.fixture
def uow(store) -> FakeUnitOfWork:
    return FakeUnitOfWork(lambda: FakeSlaTransaction(store))


@pytest.fixture
def metrics() -> SlaMetrics:
    return SlaMetrics(CollectorRegistry())


@pytest.fixture
def sla(uow, metrics) -> Sla:
    return Sla(uow, "switchboard/sla", SlaRules(load_policies()), metrics)


async def consume(uow: FakeUnitOfWork, sla: Sla, payload) -> None:
    event = new_event(payload, source="switchboard/intake", subject=payload.ticket_id)
    await uow.run(lambda tx: sla.handlers()[type(payload)](tx, event))


def published(uow: FakeUnitOfWork) -> list[tuple[str, str | None]]:
    return [(event.type.removeprefix("support.sla.").removesuffix(".v1"), event.data.metric) for _, event in uow.published]


def created(priority: Priority = Priority.URGENT, tier: CustomerTier | None = CustomerTier.VIP) -> TicketCreated:
    return TicketCreated(ticket_id=TICKET, channel=Channel.API, customer=Customer(id="c-1", tier=tier), subject="Down",
                         priority=priority, required_skills=[], created_at=NOW)


async def test_a_new_ticket_starts_its_policys_first_reply_and_resolution_clocks(uow, sla, store):
    await consume(uow, sla, created())

    assert published(uow) == [("clock_started", "first_reply"), ("clock_started", "resolution")]
    assert {clock.metric for clock in store.clocks.values()} == {Metric.FIRST_REPLY, Metric.RESOLUTION}
    assert store.tickets[TICKET].policy == "vip-urgent" and store.live == 2
    (started, _) = [event for _, event in uow.published]
    assert started.data.target_seconds == 30 * 60


async def test_the_same_ticket_announced_again_changes_nothing(uow, sla, store):
    await consume(uow, sla, created())
    stored = dict(store.clocks)

    await consume(uow, sla, created())

    assert store.clocks == stored and len(uow.published) == 2


async def test_waiting_on_the_customer_pauses_the_running_clocks(uow, sla, store):
    await consume(uow, sla, created())

    await consume(uow, sla, TicketStatusChanged(ticket_id=TICKET, previous_status="new", status="pending",
                                                changed_at=NOW + timedelta(minutes=5)))

    assert published(uow)[2:] == [("clock_paused", "first_reply"), ("clock_paused", "resolution")]
    assert not any(clock.running for clock in store.clocks.values()) and store.live == 2


async def test_an_agents_public_reply_fulfils_the_first_reply_clock(uow, sla, store):
    await consume(uow, sla, created())

    await consume(uow, sla, TicketMessageAdded(ticket_id=TICKET, message_id="m-1", author_type="agent", public=True,
                                               body="On it", added_at=NOW + timedelta(minutes=10)))

    fulfilled = [event for _, event in uow.published if event.type == "support.sla.fulfilled.v1"]
    assert [(event.data.metric, event.data.breached) for event in fulfilled] == [("first_reply", False)]
    assert not store.clocks[f"{TICKET}:first_reply"].open


async def test_an_internal_note_fulfils_nothing(uow, sla, store):
    await consume(uow, sla, created())

    await consume(uow, sla, TicketMessageAdded(ticket_id=TICKET, message_id="m-1", author_type="agent", public=False,
                                               body="Looking", added_at=NOW + timedelta(minutes=10)))

    assert len(uow.published) == 2 and store.clocks[f"{TICKET}:first_reply"].open


async def test_a_target_passed_without_a_reply_is_announced_as_breached_by_the_timers(uow, sla, store, metrics):
    await consume(uow, sla, created())
    clock = store.clocks[f"{TICKET}:first_reply"]
    after_target = to_ms(NOW + timedelta(hours=1))
    timers = Timers(uow, sla.rules, lease=None, metrics=metrics, source="switchboard/sla", clock=lambda: after_target)
    timers.horizon.load([(clock.next_fire_ms, clock.id, clock.version)], after_target)

    assert await timers.fire_due() == 1

    assert published(uow)[2:] == [("breached", "first_reply")]
    assert store.clocks[clock.id].breached and store.clocks[clock.id].version == clock.version + 1


class AlwaysFreeLease:
    def __init__(self) -> None:
        self.claims = 0

    async def acquire(self) -> bool:
        self.claims += 1
        return True


async def test_an_idle_timer_checks_less_often_up_to_the_lease_term_and_a_clock_due_soon_takes_the_lease_at_once(
    uow, sla, store, metrics
):
    lease = AlwaysFreeLease()
    timers = Timers(uow, sla.rules, lease=lease, metrics=metrics, source="switchboard/sla",
                    settings=TimerSettings(lease_seconds=6.0, horizon_seconds=86_400.0), clock=lambda: to_ms(NOW))

    waits = []
    for _ in range(5):
        before = timers.lease_due
        assert await timers.check_lease(before) is False
        waits.append(timers.lease_due - before)
    assert waits == [2.0, 4.0, 6.0, 6.0, 6.0] and lease.claims == 0

    await consume(uow, sla, created())  # its first-reply warning is due within the day's horizon
    timers.offer(store.clocks[f"{TICKET}:first_reply"])
    assert timers.lease_due == 0.0

    assert await timers.check_lease(100.0) is True
    assert lease.claims == 1 and timers.lease_due == 102.0  # held: renewed every third of the term


GHOST = "TKT-never-created"
ABOUT_A_GHOST = [
    TicketMessageAdded(ticket_id=GHOST, message_id="m1", author_type="customer", public=True, body="hi", added_at=NOW),
    TicketStatusChanged(ticket_id=GHOST, previous_status="open", status="pending", changed_at=NOW),
    TicketPriorityChanged(ticket_id=GHOST, previous_priority=Priority.LOW, priority=Priority.URGENT, changed_at=NOW),
    TicketTagsChanged(ticket_id=GHOST, tags=["vip"], changed_at=NOW),
    TicketSolved(ticket_id=GHOST, solved_at=NOW),
    TicketReopened(ticket_id=GHOST, reopened_at=NOW),
    TicketClosed(ticket_id=GHOST, closed_at=NOW),
]


@pytest.mark.parametrize("payload", ABOUT_A_GHOST, ids=lambda payload: payload.EVENT_TYPE)
async def test_an_event_about_a_ticket_sla_never_saw_created_is_rejected_with_the_reason(uow, sla, store, payload):
    """The consumer dead-letters a RejectedEvent at once, with this message as `dlq-error`."""
    with pytest.raises(RejectedEvent, match=f"unknown ticket {GHOST}: SLA has not seen it created"):
        await consume(uow, sla, payload)
    assert store == SlaStore() and uow.published == []

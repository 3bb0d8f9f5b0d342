"""Timers: the near horizon of the durable clocks, in memory, fired on time and exactly once.

- The truth is MongoDB: each clock document carries `next_fire_ms` (indexed), the instant of its
  next warning or breach. Memory holds only the clocks due within the horizon
  (`SLA_SCHEDULER_HORIZON_SECONDS`, at most `SLA_SCHEDULER_MAX_LOADED` of them), in a binary heap,
  so a node with a million live clocks keeps a few thousand entries in memory, not a million.
- The window is re-read from the index every `SLA_SCHEDULER_RELOAD_SECONDS`; clocks this process
  changes are offered to the heap at once, so a new short target does not wait for a reload.
  Overdue clocks (the service was down) are in the first window read and fire at once.
- One replica at a time runs the timers (a lease); a standby takes over when the lease expires.
  The lease is held only while a clock fires within the horizon: an idle service checks for one
  with an indexed read and renews nothing, and a clock this process writes that fires soon makes it
  claim the lease at once. The check runs every third of the lease term, and backs off to the whole
  term while it keeps finding nothing: a clock that another replica wrote and left when it died is
  still seen before that replica's lease has expired, so a standby takes over as soon as before.
  Independently of the lease, firing is a conditional update of the clock on the version the
  timer was scheduled for, in the same transaction as the outbox write of its event: a firing
  that lost a race, or a timer made stale by a newer change, writes nothing and publishes nothing.
"""

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.sla.domain import Clock, SlaRules
from services.sla.metrics import SlaMetrics
from services.sla.repository import SlaTransaction
from shared import topics
from shared.clock import now_ms
from shared.envelope import new_event
from shared.mongo import Lease, UnitOfWork
from shared.wakeup import IdleBackoff, Wakeup

log = logging.getLogger(__name__)

Entry = tuple[int, str, int]
"""(fire at, clock id, clock version)"""


class NearHorizon:
    """The timers due by `loaded_until`, soonest first; entries superseded by a newer version are skipped lazily."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._entries: dict[str, tuple[int, int]] = {}
        self.loaded_until: int = -1

    def __len__(self) -> int:
        return len(self._entries)

    def offer(self, clock_id: str, fire_ms: int | None, version: int) -> bool:
        """Schedules (or cancels, with `fire_ms` None) a clock's timer; False when it is beyond the window."""
        current = self._entries.get(clock_id)
        if current is not None and current[1] > version:
            return False  # a newer version is already scheduled
        if fire_ms is None or fire_ms > self.loaded_until:
            self._entries.pop(clock_id, None)
            return False
        if current == (fire_ms, version):
            return True
        self._entries[clock_id] = (fire_ms, version)
        heapq.heappush(self._heap, (fire_ms, clock_id, version))
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._compact()
        return True

    def load(self, rows: Iterable[Entry], until_ms: int) -> None:
        """A window read from the index: every timer due by `until_ms`."""
        self.loaded_until = max(self.loaded_until, until_ms)
        for fire_ms, clock_id, version in rows:
            self.offer(clock_id, fire_ms, version)

    def next_ms(self) -> int | None:
        self._skim()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: int, limit: int) -> list[Entry]:
        due: list[Entry] = []
        while len(due) < limit:
            self._skim()
            if not self._heap or self._heap[0][0] > now:
                break
            entry = heapq.heappop(self._heap)
            del self._entries[entry[1]]
            due.append(entry)
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._entries.clear()
        self.loaded_until = -1

    def _skim(self) -> None:
        while self._heap:
            fire_ms, clock_id, version = self._heap[0]
            if self._entries.get(clock_id) == (fire_ms, version):
                return
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        self._heap = [(fire, cid, version) for cid, (fire, version) in self._entries.items()]
        heapq.heapify(self._heap)


@dataclass(frozen=True)
class TimerSettings:
    horizon_seconds: float = 60.0
    reload_seconds: float = 2.0
    max_loaded: int = 50_000
    batch_size: int = 200
    lease_seconds: float = 5.0
    live_gauge_seconds: float = 15.0


class Timers:
    def __init__(
        self,
        uow: UnitOfWork[SlaTransaction],
        rules: SlaRules,
        lease: Lease,
        metrics: SlaMetrics,
        source: str,
        settings: TimerSettings = TimerSettings(),
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._uow = uow
        self._rules = rules
        self._lease = lease
        self._metrics = metrics
        self._source = source
        self._settings = settings
        self._now = clock
        self.horizon = NearHorizon()
        self._wakeup = Wakeup()
        self._idle_checks = IdleBackoff(settings.lease_seconds / 3, max_polls=3)
        self._holding = False
        self._lease_due = 0.0

    def offer(self, clock: Clock) -> None:
        """A clock this process just wrote: schedule its next firing if it is within the loaded window;
        holding no lease, go for it now if the clock fires within the horizon."""
        if self._holding:
            if self.horizon.offer(clock.id, clock.next_fire_ms, clock.version):
                self._wakeup.set()
        elif clock.next_fire_ms is not None and clock.next_fire_ms <= self._horizon_end():
            self._lease_due = 0.0
            self._wakeup.set()

    def _horizon_end(self) -> int:
        return self._now() + int(self._settings.horizon_seconds * 1000)

    async def _anything_to_fire(self) -> bool:
        """Whether the lease is worth holding: a timer loaded, or a clock due within the horizon."""
        return len(self.horizon) > 0 or bool(await self._uow.reads.clocks.due_before(self._horizon_end(), 1))

    async def check_lease(self, now: float) -> bool:
        """Hold the lease while a clock fires within the horizon, and say when to check again (`lease_due`):
        a third of the term later, backing off to the whole term while there is nothing to fire.
        True when this process has just taken the lease, so the horizon must be loaded."""
        worth_holding = await self._anything_to_fire()
        holding = worth_holding and await self._lease.acquire()
        self._lease_due = now + self._idle_checks.next_wait(found_work=worth_holding)
        taken = holding and not self._holding
        if taken:
            log.info("holding the SLA timer lease; loading the horizon")
        if not holding:
            self.horizon.clear()
        self._holding = holding
        return taken

    @property
    def lease_due(self) -> float:
        """When, on the monotonic clock, the lease is next checked; 0 is at once."""
        return self._lease_due

    async def run(self) -> None:
        reload_due = gauge_due = 0.0
        while True:
            try:
                now = time.monotonic()
                if now >= self._lease_due and await self.check_lease(now):
                    reload_due = 0.0
                if now >= gauge_due:
                    gauge_due = now + self._settings.live_gauge_seconds
                    self._metrics.live_clocks.set(await self._uow.reads.clocks.count_live())
                if self._holding and now >= reload_due:
                    await self.reload()
                    reload_due = time.monotonic() + self._settings.reload_seconds
                fired = await self.fire_due() if self._holding else 0
                if fired:
                    continue
                lease_due = self._lease_due
                wait = min(lease_due, reload_due if self._holding else lease_due, gauge_due) - time.monotonic()
                next_ms = self.horizon.next_ms() if self._holding else None
                if next_ms is not None:
                    wait = min(wait, (next_ms - self._now()) / 1000)
                await self._wakeup.sleep(wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SLA timers failed; retrying")
                self._holding = False
                self.horizon.clear()
                self._lease_due = 0.0
                await asyncio.sleep(1)

    async def reload(self) -> None:
        until = self._horizon_end()
        limit = self._settings.max_loaded
        rows = await self._uow.reads.clocks.due_before(until, limit)
        if len(rows) >= limit:
            until = rows[-1][0]  # the window is full: it ends at the last timer read
        self.horizon.load(rows, until)

    async def fire_due(self) -> int:
        due = self.horizon.pop_due(self._now(), self._settings.batch_size)
        if not due:
            return 0
        fired: list[tuple[Clock, object, int]] = []
        stale: list[Clock] = []

        async def decide(tx: SlaTransaction) -> list[tuple[Clock, Clock, object, int]]:
            fired.clear()
            stale.clear()
            now = self._now()
            current = await tx.clocks.clocks_by_id([clock_id for _, clock_id, _ in due])
            decisions = []
            for fire_ms, clock_id, version in due:
                clock = current.get(clock_id)
                if clock is None:
                    continue
                if (clock.version, clock.next_fire_ms) != (version, fire_ms):
                    stale.append(clock)  # changed since it was scheduled: its current timer counts
                    continue
                changed, event = self._rules.fire(clock, now)
                decisions.append((clock, changed, event, fire_ms))
            return decisions

        def announce(tx: SlaTransaction, saved: Clock, event, fire_ms: int) -> None:
            if event is not None:
                tx.publish(topics.SLA, new_event(event, source=self._source, subject=saved.ticket_id))
            fired.append((saved, event, fire_ms))

        async def at_once(tx: SlaTransaction) -> bool:
            """The usual case, in three round trips: read all, write all, outbox."""
            decisions = await decide(tx)
            saved = await tx.clocks.save_clocks([changed for _, changed, _, _ in decisions])
            if saved is None:
                raise _LostRace
            for stored, (_, _, event, fire_ms) in zip(saved, decisions, strict=True):
                announce(tx, stored, event, fire_ms)
            return True

        async def one_by_one(tx: SlaTransaction) -> None:
            """After a lost race (another replica fired some of them): each clock on its own condition."""
            for _, changed, event, fire_ms in await decide(tx):
                saved = await tx.clocks.save_clock(changed)
                if saved is not None:
                    announce(tx, saved, event, fire_ms)

        try:
            await self._uow.run(at_once)
        except _LostRace:
            await self._uow.run(one_by_one)
        committed = self._now()
        for clock in stale:
            self.horizon.offer(clock.id, clock.next_fire_ms, clock.version)
        for clock, event, fire_ms in fired:
            self.horizon.offer(clock.id, clock.next_fire_ms, clock.version)
            if event is not None:
                self._metrics.timer_lateness.observe(max(committed - fire_ms, 0) / 1000)
                self._metrics.count(event, clock.priority)
        return len(due)


class _LostRace(Exception):
    """A clock of the batch was changed by someone else between our read and our write."""

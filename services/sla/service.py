"""SLA use cases: apply ticket events to the clocks, in the consumer's transaction, and report clocks.

Each handler reads what SLA knows of the ticket and its clocks, asks `SlaRules` what the event
changes, and stores that with conditional writes and the resulting events (outbox) in the same
transaction. The consumer's batch reads its tickets and clocks up front (`prefetch`) and queues its
writes, so a batch costs a few round trips, not a few per event. An event about a ticket SLA never
saw created is rejected (dead-lettered with the reason): TicketCreated always comes first on the
ticket's partition.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from services.sla.domain import Clock, Metric, Outcome, SlaRules, TicketRecord, public_view
from services.sla.metrics import SlaMetrics
from services.sla.repository import SlaTransaction
from services.sla.timers import Timers
from shared import topics
from shared.clock import now_ms, to_ms
from shared.consumer import RejectedEvent
from shared.envelope import Envelope, new_event
from shared.events import (
    TicketClosed,
    TicketCreated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketStatus,
    TicketStatusChanged,
    TicketTagsChanged,
)
from shared.mongo import UnitOfWork


class ConcurrentChange(Exception):
    """Another writer (a ticket event, a timer) changed a clock or the ticket first: the policy reload does
    its batch again. (A consumer batch that loses such a race fails at its queued writes instead.)"""


@dataclass
class Reconciled:
    """What one batch of a policy reload did; `after` is the last ticket id it looked at."""

    after: str | None
    tickets: int
    clocks: int = 0
    events: int = 0


class Sla:
    def __init__(
        self,
        uow: UnitOfWork[SlaTransaction],
        source: str,
        rules: SlaRules,
        metrics: SlaMetrics,
        timers: Timers | None = None,
    ) -> None:
        self._uow = uow
        self._source = source
        self.rules = rules
        self._metrics = metrics
        self._timers = timers

    # --- handlers -----------------------------------------------------------------------------

    async def prefetch(self, tx: SlaTransaction, events: Sequence[Envelope]) -> None:
        """The tickets of a consumer batch and their clocks, read once for all its handlers."""
        await tx.clocks.prefetch(event.data.ticket_id for event in events)

    async def on_ticket_created(self, tx: SlaTransaction, event: Envelope[TicketCreated]) -> None:
        data = event.data
        if await tx.clocks.ticket(data.ticket_id) is not None:
            return  # already known: the same ticket announced again
        ticket = TicketRecord(
            ticket_id=data.ticket_id,
            priority=data.priority.value,
            tier=data.customer.tier.value if data.customer.tier else None,
            channel=data.channel.value,
            category=data.category,
            tags=tuple(data.tags),
            status=TicketStatus.NEW,
            created_ms=to_ms(data.created_at),
            policy=None,
        )
        await self._store(tx, event, ticket, {}, self.rules.created(ticket, to_ms(data.created_at)))

    async def on_message_added(self, tx: SlaTransaction, event: Envelope[TicketMessageAdded]) -> None:
        data = event.data
        ticket, clocks = await self._load(tx, data.ticket_id)
        outcome = self.rules.message(
            ticket, clocks, from_agent=data.author_type == "agent", public=data.public, at_ms=to_ms(data.added_at)
        )
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_status_changed(self, tx: SlaTransaction, event: Envelope[TicketStatusChanged]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        outcome = self.rules.status_changed(ticket, clocks, event.data.status, to_ms(event.data.changed_at))
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_priority_changed(self, tx: SlaTransaction, event: Envelope[TicketPriorityChanged]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        changed = TicketRecord(**{**vars(ticket), "priority": event.data.priority.value})
        outcome = self.rules.facts_changed(ticket, clocks, changed, to_ms(event.data.changed_at))
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_tags_changed(self, tx: SlaTransaction, event: Envelope[TicketTagsChanged]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        changed = TicketRecord(**{**vars(ticket), "tags": tuple(event.data.tags)})
        outcome = self.rules.facts_changed(ticket, clocks, changed, to_ms(event.data.changed_at))
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_solved(self, tx: SlaTransaction, event: Envelope[TicketSolved]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        outcome = self.rules.solved(ticket, clocks, to_ms(event.data.solved_at))
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_reopened(self, tx: SlaTransaction, event: Envelope[TicketReopened]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        outcome = self.rules.reopened(ticket, clocks, to_ms(event.data.reopened_at))
        await self._store(tx, event, ticket, clocks, outcome)

    async def on_closed(self, tx: SlaTransaction, event: Envelope[TicketClosed]) -> None:
        ticket, clocks = await self._load(tx, event.data.ticket_id)
        outcome = self.rules.closed(ticket, clocks, to_ms(event.data.closed_at))
        await self._store(tx, event, ticket, clocks, outcome)

    def handlers(self) -> dict:
        return {
            TicketCreated: self.on_ticket_created,
            TicketMessageAdded: self.on_message_added,
            TicketStatusChanged: self.on_status_changed,
            TicketPriorityChanged: self.on_priority_changed,
            TicketTagsChanged: self.on_tags_changed,
            TicketSolved: self.on_solved,
            TicketReopened: self.on_reopened,
            TicketClosed: self.on_closed,
        }

    async def reconcile(self, tx: SlaTransaction, after: str | None, limit: int) -> Reconciled:
        """One batch of a policy reload: the next `limit` tickets not closed after `after`, each changed as a
        priority change would change it, at one instant."""
        tickets = await tx.clocks.tickets_not_closed(after, limit)
        clocks = await tx.clocks.clocks_of_tickets([ticket.ticket_id for ticket in tickets])
        at_ms = now_ms()
        batch = Reconciled(after=tickets[-1].ticket_id if tickets else after, tickets=len(tickets))
        for ticket in tickets:
            current = clocks.get(ticket.ticket_id, {})
            outcome = self.rules.policies_reloaded(ticket, current, at_ms)
            await self._store(tx, None, ticket, current, outcome, queued=False)
            batch.clocks += len(outcome.clocks)
            batch.events += len(outcome.events)
        return batch

    # --- queries ------------------------------------------------------------------------------

    async def clocks_of(self, ticket_id: str) -> list[dict]:
        clocks = await self._uow.reads.clocks.clocks_of(ticket_id)
        now = now_ms()
        order = list(Metric)
        return [
            public_view(clock, self.rules.calendar(clock.calendar), now)
            for clock in sorted(clocks.values(), key=lambda clock: order.index(clock.metric))
        ]

    def policies(self) -> dict:
        return self.rules.policies.describe()

    # --- plumbing -----------------------------------------------------------------------------

    async def _load(self, tx: SlaTransaction, ticket_id: str) -> tuple[TicketRecord, Mapping[Metric, Clock]]:
        ticket = await tx.clocks.ticket(ticket_id)
        if ticket is None:
            raise RejectedEvent(f"unknown ticket {ticket_id}: SLA has not seen it created")
        return ticket, await tx.clocks.clocks_of(ticket_id)

    async def _store(
        self,
        tx: SlaTransaction,
        cause: Envelope | None,
        before: TicketRecord,
        clocks: Mapping[Metric, Clock],
        outcome: Outcome,
        *,
        queued: bool = True,
    ) -> None:
        """`queued`: the consumer's writes wait for the end of its batch (see `SlaRepository`); the policy
        reload's are sent at once, so that a lost race is a `ConcurrentChange` it can retry."""
        repository = tx.clocks
        if outcome.ticket is not None and outcome.ticket != before or before.version == 0:
            ticket = outcome.ticket or before
            if queued:
                repository.save_ticket_later(ticket)
            elif await repository.save_ticket(ticket) is None:
                raise ConcurrentChange(f"ticket {before.ticket_id} changed meanwhile")
        saved: list[Clock] = []
        for clock in outcome.clocks:
            stored = repository.save_clock_later(clock) if queued else await repository.save_clock(clock)
            if stored is None:
                raise ConcurrentChange(f"clock {clock.id} changed meanwhile")  # a timer fired it: retried
            saved.append(stored)
        opened = sum(clock.open for clock in saved) - sum(clocks[clock.metric].open for clock in saved if clock.metric in clocks)
        if queued:
            repository.add_live_later(opened)
        else:
            await repository.add_live(opened)
        priority = (outcome.ticket or before).priority
        for payload in outcome.events:
            tx.publish(topics.SLA, new_event(payload, source=self._source, subject=before.ticket_id, cause=cause))
            tx.on_commit(partial(self._metrics.count, payload, priority))
        if self._timers is not None:
            for clock in saved:
                tx.on_commit(partial(self._timers.offer, clock))

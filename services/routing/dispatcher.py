"""The dispatcher: serves the queue in order (urgency, then age) whenever an agent may have room.

Use cases only record what changed (`wake`: a ticket joined the queue, capacity was freed, an agent
came back). The dispatcher then serves those in its own transaction, so a batch of tickets from
several partitions is served in queue order, not in the order the events happened to arrive. Every
replica drains after its own commits; the periodic chores (offer expiry, declines whose cooldown
ended, escalation) and the sweep of the queue's head run on one replica at a time (a lease).
Correctness never depends on that: capacity and tickets are claimed with conditional updates, in
one transaction.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from services.routing.domain import (
    Match,
    Mode,
    Presence,
    Requirements,
    RoutedTicket,
    RoutedTicketState,
    RoutingConfig,
    affinity_agent,
    can_return_to,
    place,
    queue_key,
)
from services.routing.metrics import RoutingMetrics
from services.routing.planning import history
from services.routing.publishing import TicketPublisher
from services.routing.repository import RoutingTransaction
from shared.clock import from_ms, to_ms, utc_now
from shared.mongo import Lease, UnitOfWork
from shared.wakeup import IdleBackoff

log = logging.getLogger(__name__)

DRAIN_SCAN_LIMIT = 100
"""Waiting tickets at the head of the queue the periodic sweep looks at per transaction (a safety net)."""
DEBOUNCE_SECONDS = 0.02
MISSING_TICKET_RETRIES = 5
AGENT_SCAN_LIMIT = 2000
"""Waiting tickets read, in queue order, to find what an agent with room can take."""

IDLE_BACKOFF = 4
"""With nothing queued, the chores' look waits up to this many intervals (8 s by default)."""

Chore = Callable[[], Awaitable[object]]


class Dispatcher:
    def __init__(
        self, uow: UnitOfWork[RoutingTransaction], config: RoutingConfig, metrics: RoutingMetrics,
        publisher: TicketPublisher,
    ) -> None:
        self._uow = uow
        self._config = config
        self._metrics = metrics
        self._publisher = publisher
        self._wake = asyncio.Event()
        self._dirty_tickets: set[str] = set()
        self._dirty_agents: set[str] = set()
        self._unseen: dict[str, int] = {}

    def wake(self, *, ticket_id: str | None = None, agent_id: str | None = None) -> None:
        """A ticket needs matching, or an agent may have room: the dispatcher serves them, in queue order.

        Called inside a transaction, so a hint may outlive a rollback: it then costs one useless look.
        """
        if ticket_id:
            self._dirty_tickets.add(ticket_id)
        if agent_id:
            self._dirty_agents.add(agent_id)
        self._wake.set()

    async def run(self, lease: Lease, interval_seconds: float, *, chores: Sequence[Chore]) -> None:
        """Drain when woken; every interval, on the lease holder, first the `chores`, then a sweep of the
        queue's head.

        With no ticket waiting or offered there is nothing for the chores or the sweep, so the lease
        is not even claimed, and each look that finds nothing waits one interval longer for the next,
        up to `IDLE_BACKOFF` intervals (what a replica that died left queued waits that long at most);
        a look that finds something, or a wake in this process, brings it back to one. An idle
        routing service costs two indexed reads every `IDLE_BACKOFF` intervals, no transaction."""
        last_chores = 0.0
        chores_wait = interval_seconds
        backoff = IdleBackoff(interval_seconds, IDLE_BACKOFF)
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0.0, chores_wait - (loop.time() - last_chores))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
                woken = True
            except TimeoutError:
                woken = False
            self._wake.clear()
            tickets: set[str] = set()
            agents: set[str] = set()
            try:
                if woken:
                    await asyncio.sleep(DEBOUNCE_SECONDS)  # let a burst of commits land, then serve them together
                    self._wake.clear()
                    chores_wait = backoff.next_wait(found_work=True)
                leader = False
                if loop.time() - last_chores >= chores_wait:
                    last_chores = loop.time()
                    queued = await self._uow.reads.tickets.any_waiting_or_offered()
                    chores_wait = backoff.next_wait(found_work=queued)
                    leader = queued and await lease.acquire()
                    if leader:
                        for chore in chores:
                            await chore()
                if woken or leader:
                    tickets, agents = self._dirty_tickets, self._dirty_agents
                    self._dirty_tickets, self._dirty_agents = set(), set()
                    await self.drain(ticket_ids=tickets, agent_ids=agents, sweep=leader)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("serving the queue failed; retrying")
                self._dirty_tickets |= tickets
                self._dirty_agents |= agents

    async def drain(
        self, *, ticket_ids: set[str] = frozenset(), agent_ids: set[str] = frozenset(), sweep: bool = True
    ) -> int:
        """Serve what changed, in queue order; the number of tickets placed.

        - `ticket_ids`: tickets that joined the queue or whose requirements changed;
        - `agent_ids`: agents who may have room now: the waiting tickets they can take are found
          by reading the queue in order (channel and language filtered in the query);
        - `sweep`: also the head of the queue (the periodic safety net, and direct callers).

        The rest of the queue found nobody before and nothing freed up for it since, so it is
        not looked at: the work is bounded by what changed, not by the queue's length. With nothing
        changed and nobody waiting, one indexed read outside any transaction finds so (an idle
        routing service then costs next to nothing).
        """
        if not ticket_ids and not agent_ids and not await self._uow.reads.tickets.waiting(1):
            return 0
        placed_total = 0
        while True:
            placed, more = await self._uow.run(lambda tx: self._drain_once(tx, ticket_ids, agent_ids, sweep))
            placed_total += placed
            if not (placed and more):
                return placed_total
            ticket_ids = frozenset()  # the next pass: the queue's head and the agents again

    async def _drain_once(self, tx: RoutingTransaction, ticket_ids, agent_ids, sweep: bool) -> tuple[int, bool]:
        if not await tx.agents.anyone_free():
            return 0, False
        now = utc_now()
        found: dict[str, RoutedTicket] = {}
        if sweep:
            found.update((ticket.ticket_id, ticket) for ticket in await tx.tickets.waiting(DRAIN_SCAN_LIMIT))
        await tx.tickets.preload(ticket_ids)
        for ticket_id in ticket_ids:
            ticket = await tx.tickets.get(ticket_id)
            if ticket is None:
                self._not_yet_visible(ticket_id)
            elif ticket.state is RoutedTicketState.WAITING:
                found[ticket_id] = ticket
        for agent_id in agent_ids:
            agent = await tx.agents.get(agent_id)
            if agent is None or agent.status is not Presence.AVAILABLE or agent.free <= 0:
                continue
            for ticket in await tx.tickets.waiting_for(
                agent, lambda t: self._config.requirements(t, now), AGENT_SCAN_LIMIT
            ):
                found[ticket.ticket_id] = ticket
        queue = sorted(found.values(), key=queue_key)
        await tx.affinities.preload(ticket.customer_id for ticket in queue if ticket.customer_id)
        hopeless: set[Requirements] = set()  # free capacity only shrinks while draining
        placed = 0
        for ticket in queue:
            if return_to := ticket.return_to:
                previous = await tx.agents.get(return_to)
                if can_return_to(previous, ticket.channel.value):
                    reason = f"reopened: back to the previous agent {return_to}, who has room on {ticket.channel.value}"
                    self._place(tx, ticket, Match(previous, reason), "reopened")
                    placed += 1
                    continue
                # Else the queue: carry on with the ticket as stored now, whose version the claim below expects.
                ticket = await tx.tickets.apply(ticket.forgo_return())
                if ticket is None:
                    continue
            requirements = self._config.requirements(ticket, now)
            if requirements in hopeless:
                continue
            candidates = await tx.agents.candidates(requirements, headroom=len(queue))  # a claim per ticket at most
            if not candidates:
                hopeless.add(requirements)
                continue
            preferred = await self._affinity(tx, ticket, now)
            if preferred and all(agent.id != preferred for agent in candidates):
                extra = await tx.agents.get(preferred)
                if extra is not None:
                    candidates.append(extra)
            placement = place(ticket, requirements, candidates, now, affinity_agent_id=preferred,
                              default_mode=self._config.mode)
            if placement is not None:
                self._place(tx, ticket, placement.match, placement.mode.value)
                placed += 1
        return placed, sweep and len(queue) >= DRAIN_SCAN_LIMIT

    def _not_yet_visible(self, ticket_id: str) -> None:
        """A hint about a ticket whose transaction has not committed yet (or rolled back): look again, a few times."""
        tries = self._unseen.get(ticket_id, 0) + 1
        if tries <= MISSING_TICKET_RETRIES:
            self._unseen[ticket_id] = tries
            self.wake(ticket_id=ticket_id)
        else:
            self._unseen.pop(ticket_id, None)

    async def _affinity(self, tx: RoutingTransaction, ticket: RoutedTicket, now) -> str | None:
        remembered = None
        if ticket.customer_id:
            row = await tx.affinities.last_agent(ticket.customer_id)
            remembered = (row[0], from_ms(row[1])) if row else None
        return affinity_agent(ticket.previous_agent_id, remembered, now, self._config.affinity_window)

    def _place(self, tx: RoutingTransaction, ticket: RoutedTicket, match: Match, mode: str) -> None:
        """Claim a slot and the ticket, as this transaction read them (a replica that changed either
        meanwhile fails the transaction, see the repository); assign (auto, reopened) or offer (offer)."""
        tx.agents.claim_slot(match.agent, ticket.channel.value)
        now = utc_now()
        if mode == Mode.OFFER.value:
            offer_id = uuid.uuid4().hex
            offered = ticket.offer(match.agent.id, match.reason, offer_id, now, self._config.offer_timeout)
            tx.tickets.claim(offered)
            self._publisher.publish(tx, ticket, offered.facts)
            log.info("offered %s to %s (%s)", ticket.ticket_id, match.agent.id, offer_id)
            return
        assigned = ticket.assign(match.agent.id, match.reason, now, team=match.agent.team)
        tx.tickets.claim(assigned)
        self._publisher.publish(tx, ticket, assigned.facts)
        if ticket.customer_id:
            tx.affinities.remember(ticket.customer_id, match.agent.id, to_ms(now))
        tx.planning.record(history.assigned(ticket.channel.value, ticket.required_skills, ticket.queued_at, now))
        wait = max((now - ticket.created_at).total_seconds(), 0)
        tx.on_commit(lambda: self._metrics.assignments.labels(mode=mode).inc())
        tx.on_commit(lambda: self._metrics.queue_wait.observe(wait))
        log.info("assigned %s to %s", ticket.ticket_id, match.agent.id)

"""Routing's use cases: keep the queue, and serve it in order whenever an agent has room.

Event handlers only record what changed (a ticket joined the queue, capacity was freed, an
agent came back) and wake the dispatcher. The dispatcher then serves the queue in order
(urgency, then age) in its own transaction, so a batch of tickets from several partitions is
served in queue order, not in the order the events happened to arrive. Every replica drains
after its own commits; the periodic sweep, offer expiry and escalation run on one replica at a
time (a lease). Correctness never depends on that: capacity and tickets are claimed with
conditional updates, in one transaction.
"""

import asyncio
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.routing.domain import (
    DECLINE_COOLDOWN,
    Agent,
    AgentProfile,
    EscalationPolicy,
    Match,
    Mode,
    Presence,
    QueueSummary,
    Requirements,
    RoutedTicketState,
    WaitingTicket,
    affinity_agent,
    can_return_to,
    choose_agent,
    presence_instant,
    queue_key,
    supersedes,
    urgency,
)
from services.routing.metrics import RoutingMetrics
from services.routing.repository import (
    AffinityRepository,
    AgentRepository,
    RoutedTicketRepository,
    declines_fields,
    waiting_ticket,
)
from shared import topics
from shared.clock import from_ms, now_ms, to_ms, utc_now
from shared.consumer import RejectedEvent
from shared.envelope import Envelope, new_event
from shared.events import (
    AgentStatusChanged,
    OfferOutcome,
    Payload,
    Priority,
    SKILL_PATTERN,
    SlaWarning,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketEscalated,
    TicketOfferAnswered,
    TicketOffered,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketUnassigned,
)
from shared.mongo import Lease, Transaction, UnitOfWork

log = logging.getLogger(__name__)

DRAIN_SCAN_LIMIT = 100
"""Waiting tickets at the head of the queue the periodic sweep looks at per transaction (a safety net)."""
EXPIRY_BATCH = 200
ESCALATION_BATCH = 500
DEBOUNCE_SECONDS = 0.02
MISSING_TICKET_RETRIES = 5
AGENT_SCAN_LIMIT = 2000
"""Waiting tickets read, in queue order, to find what an agent with room can take."""

_SKILL = re.compile(SKILL_PATTERN)


class UnknownAgent(LookupError):
    pass


class UnknownOffer(LookupError):
    pass


class OfferClosed(Exception):
    """The offer was answered, expired or withdrawn already."""


@dataclass(frozen=True)
class OfferAnswer:
    offer_id: str
    ticket_id: str
    agent_id: str
    outcome: OfferOutcome


@dataclass(frozen=True)
class RoutingConfig:
    mode: Mode = Mode.AUTO
    offer_timeout: timedelta = timedelta(seconds=120)
    unassign_on: frozenset[Presence] = frozenset({Presence.OFFLINE})
    affinity_window: timedelta = timedelta(days=7)
    policy: EscalationPolicy = EscalationPolicy()
    decline_cooldown: timedelta = DECLINE_COOLDOWN


class Routing:
    def __init__(self, uow: UnitOfWork, source: str, metrics: RoutingMetrics, config: RoutingConfig) -> None:
        self._uow = uow
        self._source = source
        self._metrics = metrics
        self._config = config
        self._wake = asyncio.Event()
        self._dirty_tickets: set[str] = set()
        self._dirty_agents: set[str] = set()
        self._unseen: dict[str, int] = {}
        self._idle_view = RoutedTicketRepository(uow.db)
        """Reads outside any transaction: a periodic chore with nothing to do finds so with one indexed
        read, and opens no transaction (an idle routing service then costs next to nothing)."""

    # --- events (each runs inside the consumer's batch transaction) --------------------------

    async def prefetch(self, tx: Transaction, events: Sequence[Envelope]) -> None:
        """Before a consumer batch's handlers: the tickets its events are about, in one read."""
        ticket_ids = [ticket_id for event in events if (ticket_id := getattr(event.data, "ticket_id", None))]
        await RoutedTicketRepository(tx.db, tx).preload(ticket_ids)

    async def on_ticket_created(self, tx: Transaction, event: Envelope[TicketCreated]) -> None:
        data = event.data
        invalid = [skill for skill in (*data.required_skills, *data.required_skill_levels) if not _SKILL.match(skill)]
        if invalid:
            raise RejectedEvent(f"ticket {data.ticket_id}: skills not valid: {', '.join(map(repr, invalid[:5]))[:300]}")
        ticket = WaitingTicket(
            ticket_id=data.ticket_id,
            priority=data.priority,
            required_skills=data.required_skills,
            skill_levels=data.required_skill_levels,
            channel=data.channel,
            language=data.language or data.customer.language,
            category=data.category,
            customer_id=data.customer.id or (str(data.customer.email) if data.customer.email else None),
            previous_agent_id=data.previous_agent_id,
            created_at=data.created_at,
            queued_at=data.created_at,
        )
        tickets = RoutedTicketRepository(tx.db, tx)
        if await tickets.enqueue(
            ticket,
            next_escalation_ms=self._next_escalation_ms(to_ms(data.created_at), 0),
            extra={"correlation_id": event.correlationid, "causation_id": str(event.id)},
        ):
            self.wake(ticket_id=ticket.ticket_id)

    async def on_priority_changed(self, tx: Transaction, event: Envelope[TicketPriorityChanged]) -> None:
        tickets = RoutedTicketRepository(tx.db, tx)
        document = await self._known_ticket(tickets, event.data.ticket_id)
        priority = event.data.priority
        await tickets.update(
            document["_id"],
            {},
            {"priority": priority.value, "urgency": urgency(priority, document.get("sla_warned", False))},
        )
        self.wake(ticket_id=document["_id"])

    async def on_sla_warning(self, tx: Transaction, event: Envelope[SlaWarning]) -> None:
        tickets = RoutedTicketRepository(tx.db, tx)
        document = await self._known_ticket(tickets, event.data.ticket_id)
        if document["state"] not in (RoutedTicketState.WAITING, RoutedTicketState.OFFERED) or document.get("sla_warned"):
            return  # nothing waits any more, or it moved up already
        await tickets.update(
            document["_id"],
            {},
            {"sla_warned": True, "urgency": urgency(Priority(document["priority"]), True)},
        )
        self.wake(ticket_id=document["_id"])

    async def on_solved(self, tx: Transaction, event: Envelope[TicketSolved]) -> None:
        await self._finish(tx, event.data.ticket_id, "solved")

    async def on_closed(self, tx: Transaction, event: Envelope[TicketClosed]) -> None:
        await self._finish(tx, event.data.ticket_id, "closed")

    async def _finish(self, tx: Transaction, ticket_id: str, how: str) -> None:
        """The ticket leaves routing's hands: the queue if it waited, its agent's capacity if it was held."""
        tickets = RoutedTicketRepository(tx.db, tx)
        document = await self._known_ticket(tickets, ticket_id)
        state = document["state"]
        if state == RoutedTicketState.DONE:
            return
        done = await tickets.update(
            ticket_id,
            {"state": state, "version": document["version"]},
            {"state": RoutedTicketState.DONE, "finished_ms": now_ms(), "finished_as": how, "offer_id": None},
        )
        if done is None:
            raise RuntimeError(f"ticket {ticket_id} changed concurrently")  # the batch is retried
        if state in (RoutedTicketState.ASSIGNED, RoutedTicketState.OFFERED) and document.get("assignee_id"):
            await AgentRepository(tx.db, tx).release_slot(document["assignee_id"], document["channel"])
            self.wake(agent_id=document["assignee_id"])

    async def on_reopened(self, tx: Transaction, event: Envelope[TicketReopened]) -> None:
        """Back to the queue, marked for the previous agent: the dispatcher gives it to them if they have room."""
        tickets = RoutedTicketRepository(tx.db, tx)
        document = await self._known_ticket(tickets, event.data.ticket_id)
        if document["state"] != RoutedTicketState.DONE:
            return
        previous = event.data.previous_assignee_id or document.get("assignee_id")
        await tickets.update(
            document["_id"],
            {"state": RoutedTicketState.DONE},
            {"state": RoutedTicketState.WAITING, "assignee_id": None, "return_to": previous, **declines_fields({}, None),
             **self._requeued_fields()},
        )
        self.wake(ticket_id=document["_id"])

    async def on_agent_status_changed(self, tx: Transaction, event: Envelope[AgentStatusChanged]) -> None:
        """Applied only if newer than the presence in force; a stale event (delayed, replayed from the
        DLQ, overtaken by a PATCH) is acknowledged and ignored, not an error."""
        agent_id = event.data.agent_id
        try:
            status = Presence(event.data.status)
        except ValueError:
            raise RejectedEvent(
                f"invalid status {event.data.status[:50]!r} for agent {agent_id}: expected available, away or offline"
            ) from None
        agent = await AgentRepository(tx.db, tx).get(agent_id)
        if agent is None:
            raise RejectedEvent(f"unknown agent {agent_id}")
        at = presence_instant(event.data.changed_at, utc_now())
        if supersedes(at, agent.presence_changed_at) and await self._change_presence(
            tx, agent_id, status, at, cause=event, only_if_newer=True
        ):
            return
        log.info("ignored stale presence event %s: changed at %s, not after the presence in force", event.id, at)
        tx.on_commit(self._metrics.stale_presence_events.inc)

    async def _known_ticket(self, tickets: RoutedTicketRepository, ticket_id: str) -> dict:
        document = await tickets.get(ticket_id)
        if document is None:
            raise RejectedEvent(f"unknown ticket {ticket_id}")
        return document

    async def upgrade_legacy_records(self) -> None:
        """At start: bring agents and tickets stored by the walking skeleton up to this release's shape."""

        async def work(tx: Transaction) -> int:
            agents = await AgentRepository(tx.db, tx).upgrade_legacy()
            tickets = await RoutedTicketRepository(tx.db, tx).upgrade_legacy(self._next_escalation_ms)
            return agents + tickets

        if upgraded := await self._uow.run(work):
            log.info("upgraded %d agents and tickets stored by an earlier release", upgraded)

    # --- agents ----------------------------------------------------------------------------------

    async def put_agent(self, agent_id: str, profile: AgentProfile) -> Agent:
        """Create or update an agent; going away or offline returns their offers (and, if configured, tickets)."""

        async def work(tx: Transaction) -> None:
            agents = AgentRepository(tx.db, tx)
            while True:
                current = await agents.get(agent_id)
                if current is None:
                    if await agents.create(Agent.new(agent_id, profile, utc_now())):
                        return None
                    continue
                if await agents.replace(current.with_profile(profile, utc_now()), expected_version=current.version):
                    break
            if profile.status is not Presence.AVAILABLE and current.status is not profile.status:
                await self._requeue_held(tx, agent_id, profile.status, cause=None)
            return None

        await self._uow.run(work)
        await self.drain(agent_ids={agent_id}, sweep=False)
        return await self.get_agent(agent_id)

    async def set_presence(self, agent_id: str, status: Presence) -> Agent:
        async def work(tx: Transaction) -> None:
            if await self._change_presence(tx, agent_id, status, utc_now(), cause=None) is None:
                raise UnknownAgent(agent_id)
            return None

        await self._uow.run(work)
        await self.drain(agent_ids={agent_id}, sweep=False)
        return await self.get_agent(agent_id)

    async def _change_presence(
        self, tx: Transaction, agent_id: str, status: Presence, at: datetime, cause: Envelope | None,
        only_if_newer: bool = False,
    ) -> Agent | None:
        changed = await AgentRepository(tx.db, tx).set_status(agent_id, status, at, only_if_newer=only_if_newer)
        if changed is None:
            return None
        agent, before = changed
        if status is not Presence.AVAILABLE and before is not status:
            await self._requeue_held(tx, agent_id, status, cause)
        if status is Presence.AVAILABLE:
            self.wake(agent_id=agent_id)
        return agent

    async def _requeue_held(
        self, tx: Transaction, agent_id: str, status: Presence, cause: Envelope | None
    ) -> None:
        """Offers always go back to the queue; assigned tickets too when UNASSIGN_ON_PRESENCE names `status`."""
        tickets = RoutedTicketRepository(tx.db, tx)
        for document in await tickets.offers_of(agent_id):
            await self._return_offer(tx, document, OfferOutcome.EXPIRED, cause=cause)
        if status not in self._config.unassign_on:
            return
        agents = AgentRepository(tx.db, tx)
        for document in await tickets.held_by(agent_id, [RoutedTicketState.ASSIGNED]):
            back = await tickets.update(
                document["_id"],
                {"state": RoutedTicketState.ASSIGNED, "assignee_id": agent_id},
                {
                    "state": RoutedTicketState.WAITING,
                    "assignee_id": None,
                    "previous_assignee_id": agent_id,
                    **self._requeued_fields(),
                },
            )
            if back is None:
                continue
            await agents.release_slot(agent_id, document["channel"])
            unassigned = TicketUnassigned(
                ticket_id=document["_id"],
                agent_id=agent_id,
                reason=f"agent went {status.value}; back to the queue with its original age",
                unassigned_at=utc_now(),
            )
            self._publish(tx, unassigned, document, cause)
            tx.on_commit(self._metrics.unassignments.inc)
            self.wake(ticket_id=document["_id"])

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await AgentRepository(self._uow.db).get(agent_id)

    async def list_agents(self, *, after: str | None, limit: int) -> list[Agent]:
        return await AgentRepository(self._uow.db).page(after=after, limit=limit)

    # --- visibility ------------------------------------------------------------------------------

    async def queue_summary(self) -> QueueSummary:
        return await RoutedTicketRepository(self._uow.db).summary(now_ms())

    async def ticket_view(self, ticket_id: str) -> dict | None:
        document = await RoutedTicketRepository(self._uow.db).get(ticket_id)
        if document is None:
            return None
        keys = ("state", "priority", "urgency", "sla_warned", "channel", "language", "required_skills", "skill_levels",
                "assignee_id", "offer_id", "escalation_step", "reason")
        view = {"ticket_id": document["_id"], **{key: document.get(key) for key in keys}}
        view["sla_warned"] = bool(view["sla_warned"])  # the embedded server stores booleans as 0/1
        view["created_at"] = from_ms(document["created_ms"]).isoformat()
        if document.get("offer_expires_ms") and document["state"] == RoutedTicketState.OFFERED:
            view["offer_expires_at"] = from_ms(document["offer_expires_ms"]).isoformat()
        ticket, now = waiting_ticket(document), utc_now()
        view["declined_by"] = sorted(ticket.declines)
        view["declined_until"] = {
            agent: (ticket.declines[agent] + self._config.decline_cooldown).isoformat()
            for agent in sorted(ticket.cooling_down(now, self._config.decline_cooldown))
        }
        view["requirements"] = self._requirements(ticket, now).describe()
        return view

    async def offers_for(self, agent_id: str) -> list[dict]:
        if await self.get_agent(agent_id) is None:
            raise UnknownAgent(agent_id)
        return [
            {"offer_id": d["offer_id"], "ticket_id": d["_id"], "expires_at": from_ms(d["offer_expires_ms"]).isoformat()}
            for d in await RoutedTicketRepository(self._uow.db).offers_of(agent_id)
        ]

    async def refresh_gauges(self) -> None:
        depth = await RoutedTicketRepository(self._uow.db).depth_by_priority()
        for priority, count in depth.items():
            self._metrics.queue_depth.labels(priority=priority).set(count)

    # --- offers ----------------------------------------------------------------------------------

    async def answer_offer(self, offer_id: str, *, accept: bool) -> OfferAnswer:
        async def work(tx: Transaction) -> OfferAnswer:
            tickets = RoutedTicketRepository(tx.db, tx)
            document = await tickets.by_offer(offer_id)
            if document is None:
                raise UnknownOffer(offer_id)
            if document["state"] != RoutedTicketState.OFFERED or document.get("offer_id") != offer_id:
                raise OfferClosed(f"offer {offer_id} is no longer open")
            if document["offer_expires_ms"] <= now_ms():
                raise OfferClosed(f"offer {offer_id} expired")  # the sweep gives the ticket to the next agent
            agent_id = document["assignee_id"]
            if not accept:
                await self._return_offer(tx, document, OfferOutcome.REJECTED, cause=None)
                return OfferAnswer(offer_id, document["_id"], agent_id, OfferOutcome.REJECTED)
            now = utc_now()
            taken = await tickets.update(
                document["_id"],
                {"state": RoutedTicketState.OFFERED, "offer_id": offer_id},
                {"state": RoutedTicketState.ASSIGNED, "assigned_ms": to_ms(now), "offer_id": None},
            )
            if taken is None:
                raise OfferClosed(f"offer {offer_id} is no longer open")
            answered = TicketOfferAnswered(
                ticket_id=document["_id"], offer_id=offer_id, agent_id=agent_id, outcome=OfferOutcome.ACCEPTED,
                answered_at=now,
            )
            self._publish(tx, answered, document, None)
            assigned = TicketAssigned(
                ticket_id=document["_id"], agent_id=agent_id, reason=f"accepted an offer: {document.get('reason', '')}",
                assigned_at=now,
            )
            self._publish(tx, assigned, document, None)
            if document.get("customer_id"):
                AffinityRepository(tx.db, tx).remember(document["customer_id"], agent_id, to_ms(now))
            wait = (to_ms(now) - document["created_ms"]) / 1000
            tx.on_commit(self._metrics.offers.labels(outcome="accepted").inc)
            tx.on_commit(self._metrics.assignments.labels(mode="offer").inc)
            tx.on_commit(lambda: self._metrics.queue_wait.observe(max(wait, 0)))
            return OfferAnswer(offer_id, document["_id"], agent_id, OfferOutcome.ACCEPTED)

        answer = await self._uow.run(work)
        if answer.outcome is OfferOutcome.REJECTED:
            await self.drain(ticket_ids={answer.ticket_id}, agent_ids={answer.agent_id}, sweep=False)
        return answer

    async def _return_offer(
        self, tx: Transaction, document: dict, outcome: OfferOutcome, cause: Envelope | None
    ) -> bool:
        """Rejected or lapsed: the ticket goes back to the queue for the next agent, with its original age.

        The agent is not offered it again within OFFER_DECLINE_COOLDOWN_SECONDS; the sweep looks at
        the ticket again when that ends (`revisit_declined`).
        """
        agent_id = document["assignee_id"]
        offer_id = document["offer_id"]
        now = utc_now()
        declined = waiting_ticket(document).declined(agent_id, now)
        back = await RoutedTicketRepository(tx.db, tx).update(
            document["_id"],
            {"state": RoutedTicketState.OFFERED, "offer_id": offer_id},
            {"state": RoutedTicketState.WAITING, "assignee_id": None, "offer_id": None,
             **declines_fields(declined.declines, declined.declines_lapse_at(now, self._config.decline_cooldown))},
        )
        if back is None:
            return False
        await AgentRepository(tx.db, tx).release_slot(agent_id, document["channel"])
        answered = TicketOfferAnswered(
            ticket_id=document["_id"], offer_id=offer_id, agent_id=agent_id, outcome=outcome, answered_at=now
        )
        self._publish(tx, answered, document, cause)
        tx.on_commit(lambda: self._metrics.offers.labels(outcome=outcome.value).inc())
        self.wake(ticket_id=document["_id"], agent_id=agent_id)
        return True

    async def expire_offers(self) -> int:
        if not await self._idle_view.offers_expired(now_ms(), 1):
            return 0

        async def work(tx: Transaction) -> int:
            expired = 0
            for document in await RoutedTicketRepository(tx.db, tx).offers_expired(now_ms(), EXPIRY_BATCH):
                expired += await self._return_offer(tx, document, OfferOutcome.EXPIRED, cause=None)
            return expired

        return await self._uow.run(work)

    async def revisit_declined(self) -> int:
        """Waiting tickets whose decline cooldown ended go back to the dispatcher, wherever they are in the queue."""
        cooldown = self._config.decline_cooldown
        if not await self._idle_view.declines_lapsed(now_ms(), 1):
            return 0

        async def work(tx: Transaction) -> int:
            tickets = RoutedTicketRepository(tx.db, tx)
            now = utc_now()
            revisited = 0
            for document in await tickets.declines_lapsed(to_ms(now), EXPIRY_BATCH):
                lapse = waiting_ticket(document).declines_lapse_at(now, cooldown)
                still_waiting = {"state": RoutedTicketState.WAITING, "version": document["version"]}
                next_lapse = {"decline_lapse_ms": to_ms(lapse) if lapse else None}
                if await tickets.update(document["_id"], still_waiting, next_lapse):
                    self.wake(ticket_id=document["_id"])
                    revisited += 1
            return revisited

        return await self._uow.run(work)

    # --- escalation ------------------------------------------------------------------------------

    async def escalate(self) -> int:
        """Apply the escalation steps that came due, one event per step."""
        policy = self._config.policy
        if not policy.steps or not await self._idle_view.escalation_due(now_ms(), 1):
            return 0

        async def work(tx: Transaction) -> int:
            tickets = RoutedTicketRepository(tx.db, tx)
            now = now_ms()
            applied = 0
            for document in await tickets.escalation_due(now, ESCALATION_BATCH):
                done = document.get("escalation_step", 0)
                queued = document.get("queued_ms") or document["created_ms"]
                due = policy.due_steps(done, (now - queued) / 1000)
                if not due:
                    await tickets.update(document["_id"], {"state": RoutedTicketState.WAITING},
                                         {"next_escalation_ms": self._next_escalation_ms(queued, done)})
                    continue
                last = due[-1][0]
                changed = await tickets.update(
                    document["_id"],
                    {"state": RoutedTicketState.WAITING, "escalation_step": done},
                    {"escalation_step": last, "next_escalation_ms": self._next_escalation_ms(queued, last)},
                )
                if changed is None:
                    continue
                self.wake(ticket_id=document["_id"])
                for number, step in due:
                    escalated = TicketEscalated(
                        ticket_id=document["_id"], step=number, action=step.action.value,
                        description=step.describe(), escalated_at=from_ms(now),
                    )
                    self._publish(tx, escalated, document, None)
                    tx.on_commit(lambda action=step.action.value: self._metrics.escalations.labels(action=action).inc())
                applied += len(due)
            return applied

        return await self._uow.run(work)

    def _next_escalation_ms(self, queued_ms: int, done: int) -> int | None:
        wait = self._config.policy.next_due_seconds(done)
        return None if wait is None else queued_ms + int(wait * 1000)

    def _requirements(self, ticket: WaitingTicket, now: datetime) -> Requirements:
        return self._config.policy.requirements(ticket, now, self._config.decline_cooldown)

    def _requeued_fields(self) -> dict:
        """A ticket back in the queue keeps its original age (created_ms) and starts its escalation afresh."""
        now = now_ms()
        return {"queued_ms": now, "escalation_step": 0, "next_escalation_ms": self._next_escalation_ms(now, 0)}

    # --- serving the queue -----------------------------------------------------------------------

    def wake(self, *, ticket_id: str | None = None, agent_id: str | None = None) -> None:
        """A ticket needs matching, or an agent may have room: the dispatcher serves them, in queue order.

        Called inside a transaction, so a hint may outlive a rollback: it then costs one useless look.
        """
        if ticket_id:
            self._dirty_tickets.add(ticket_id)
        if agent_id:
            self._dirty_agents.add(agent_id)
        self._wake.set()

    async def run_dispatcher(self, lease: Lease, interval_seconds: float) -> None:
        """Drain when woken; every interval, on the lease holder, also expire offers, escalate and sweep."""
        last_chores = 0.0
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0.0, interval_seconds - (loop.time() - last_chores))
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
                chores_due = loop.time() - last_chores >= interval_seconds
                leader = False
                if chores_due:
                    last_chores = loop.time()
                    leader = await lease.acquire()
                    if leader:
                        await self.expire_offers()
                        await self.revisit_declined()
                        await self.escalate()
                if woken or leader:
                    tickets, agents = self._dirty_tickets, self._dirty_agents
                    self._dirty_tickets, self._dirty_agents = set(), set()
                    await self.drain(ticket_ids=tickets, agent_ids=agents, sweep=leader)
                if chores_due:
                    await self.refresh_gauges()
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
        not looked at: the work is bounded by what changed, not by the queue's length.
        """
        if not ticket_ids and not agent_ids and not await self._idle_view.waiting(1):
            return 0
        placed_total = 0
        while True:
            placed, more = await self._uow.run(lambda tx: self._drain_once(tx, ticket_ids, agent_ids, sweep))
            placed_total += placed
            if not (placed and more):
                return placed_total
            ticket_ids = frozenset()  # the next pass: the queue's head and the agents again

    async def _drain_once(
        self, tx: Transaction, ticket_ids, agent_ids, sweep: bool
    ) -> tuple[int, bool]:
        agents = AgentRepository(tx.db, tx)
        tickets = RoutedTicketRepository(tx.db, tx)
        if not await agents.anyone_free():
            return 0, False
        now = utc_now()
        found: dict[str, dict] = {}
        if sweep:
            found.update((d["_id"], d) for d in await tickets.waiting(DRAIN_SCAN_LIMIT))
        await tickets.preload(ticket_ids)
        for ticket_id in ticket_ids:
            document = await tickets.get(ticket_id)
            if document is None:
                self._not_yet_visible(ticket_id)
            elif document["state"] == RoutedTicketState.WAITING:
                found[ticket_id] = document
        for agent_id in agent_ids:
            agent = await agents.get(agent_id)
            if agent is None or agent.status is not Presence.AVAILABLE or agent.free <= 0:
                continue
            for document in await tickets.waiting_for(agent, lambda t: self._requirements(t, now), AGENT_SCAN_LIMIT):
                found[document["_id"]] = document
        queue = sorted(found.values(), key=lambda d: queue_key(waiting_ticket(d)))
        await AffinityRepository(tx.db, tx).preload(d["customer_id"] for d in queue if d.get("customer_id"))
        hopeless: set[Requirements] = set()  # free capacity only shrinks while draining
        placed = 0
        for document in queue:
            ticket = waiting_ticket(document)
            return_to = document.get("return_to")
            if return_to:
                previous = await agents.get(return_to)
                if can_return_to(previous, ticket.channel.value):
                    reason = f"reopened: back to the previous agent {return_to}, who has room on {ticket.channel.value}"
                    self._place(tx, ticket, document, Match(previous, reason), "reopened")
                    placed += 1
                    continue
                # Else the queue: carry on with the updated document, whose version the claim below expects.
                still_waiting = {"state": RoutedTicketState.WAITING, "version": document["version"]}
                document = await tickets.update(ticket.ticket_id, still_waiting, {"return_to": None})
                if document is None:
                    continue
            requirements = self._requirements(ticket, now)
            if requirements in hopeless:
                continue
            candidates = await agents.candidates(requirements, headroom=len(queue))  # a claim per ticket at most
            if not candidates:
                hopeless.add(requirements)
                continue
            preferred = await self._affinity(tx, ticket, now)
            if preferred and all(agent.id != preferred for agent in candidates):
                extra = await agents.get(preferred)
                if extra is not None:
                    candidates.append(extra)
            if (match := choose_agent(candidates, ticket, requirements, now, affinity_agent_id=preferred)) is not None:
                self._place(tx, ticket, document, match, (match.agent.mode or self._config.mode).value)
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

    async def _affinity(self, tx: Transaction, ticket: WaitingTicket, now) -> str | None:
        remembered = None
        if ticket.customer_id:
            row = await AffinityRepository(tx.db, tx).last_agent(ticket.customer_id)
            remembered = (row[0], from_ms(row[1])) if row else None
        return affinity_agent(ticket.previous_agent_id, remembered, now, self._config.affinity_window)

    def _place(self, tx: Transaction, ticket: WaitingTicket, document: dict, match: Match, mode: str) -> None:
        """Claim a slot and the ticket, as this transaction read them (a replica that changed either
        meanwhile fails the transaction, see the repository); assign (auto, reopened) or offer (offer)."""
        AgentRepository(tx.db, tx).claim_slot(match.agent, ticket.channel.value)
        tickets = RoutedTicketRepository(tx.db, tx)
        now = utc_now()
        if mode == Mode.OFFER.value:
            offer_id = uuid.uuid4().hex
            expires = now + self._config.offer_timeout
            tickets.take(
                document,
                {"state": RoutedTicketState.OFFERED, "assignee_id": match.agent.id, "offer_id": offer_id,
                 "return_to": None, "offer_expires_ms": to_ms(expires), "reason": match.reason,
                 "offer_ids": [*document.get("offer_ids", []), offer_id]},
            )
        else:
            tickets.take(
                document,
                {"state": RoutedTicketState.ASSIGNED, "assignee_id": match.agent.id, "assigned_ms": to_ms(now),
                 "reason": match.reason, "return_to": None},
            )
        if mode == Mode.OFFER.value:
            offered = TicketOffered(ticket_id=ticket.ticket_id, offer_id=offer_id, agent_id=match.agent.id,
                                    expires_at=expires)
            self._publish(tx, offered, document, None)
            log.info("offered %s to %s (%s)", ticket.ticket_id, match.agent.id, offer_id)
            return
        assigned = TicketAssigned(ticket_id=ticket.ticket_id, agent_id=match.agent.id, reason=match.reason,
                                  assigned_at=now)
        self._publish(tx, assigned, document, None)
        if ticket.customer_id:
            AffinityRepository(tx.db, tx).remember(ticket.customer_id, match.agent.id, to_ms(now))
        wait = max((now - ticket.created_at).total_seconds(), 0)
        tx.on_commit(lambda: self._metrics.assignments.labels(mode=mode).inc())
        tx.on_commit(lambda: self._metrics.queue_wait.observe(wait))
        log.info("assigned %s to %s", ticket.ticket_id, match.agent.id)

    # --- plumbing --------------------------------------------------------------------------------

    def _publish(self, tx: Transaction, payload: Payload, document: dict, cause: Envelope | None) -> None:
        """Publish about a ticket, keeping the correlation id of the event that created it."""
        event = new_event(
            payload,
            source=self._source,
            subject=document["_id"],
            cause=cause,
            correlation_id=document.get("correlation_id"),
            causation_id=document.get("causation_id"),
        )
        tx.publish(topics.ROUTING, event)

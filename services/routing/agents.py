"""Agents: profiles (PUT), presence (PATCH, and workforce systems' status events).

An agent going away or offline hands back their open offers at once, and their assigned tickets too
when UNASSIGN_ON_PRESENCE names the new presence; an agent becoming available, or with more room,
is served from the queue.
"""

import logging
from datetime import datetime

from services.routing.dispatcher import Dispatcher
from services.routing.domain import (
    Agent,
    AgentProfile,
    Presence,
    RoutingConfig,
    RoutedTicketState,
    UnknownAgent,
    presence_instant,
    supersedes,
)
from services.routing.metrics import RoutingMetrics
from services.routing.offers import Offers
from services.routing.planning import history
from services.routing.publishing import TicketPublisher
from services.routing.repository import RoutingTransaction
from shared.clock import utc_now
from shared.consumer import RejectedEvent
from shared.envelope import Envelope
from shared.events import AgentStatusChanged, OfferOutcome
from shared.mongo import UnitOfWork

log = logging.getLogger(__name__)


class Agents:
    def __init__(
        self, uow: UnitOfWork[RoutingTransaction], config: RoutingConfig, metrics: RoutingMetrics,
        publisher: TicketPublisher, dispatcher: Dispatcher, offers: Offers,
    ) -> None:
        self._uow = uow
        self._config = config
        self._metrics = metrics
        self._publisher = publisher
        self._dispatcher = dispatcher
        self._offers = offers

    async def put_agent(self, agent_id: str, profile: AgentProfile) -> Agent:
        """Create or update an agent; going away or offline returns their offers (and, if configured, tickets)."""

        async def work(tx: RoutingTransaction) -> None:
            while True:
                current = await tx.agents.get(agent_id)
                if current is None:
                    if await tx.agents.create(Agent.new(agent_id, profile, utc_now())):
                        return None
                    continue
                updated = current.with_profile(profile, utc_now())
                if await tx.agents.replace(updated, expected_version=current.version):
                    break
            self._record_available(tx, current, updated.presence_changed_at)
            if profile.status is not Presence.AVAILABLE and current.status is not profile.status:
                await self._requeue_held(tx, agent_id, profile.status, cause=None)
            return None

        await self._uow.run(work)
        await self._dispatcher.drain(agent_ids={agent_id}, sweep=False)
        return await self._uow.reads.agents.get(agent_id)

    async def set_presence(self, agent_id: str, status: Presence) -> Agent:
        async def work(tx: RoutingTransaction) -> None:
            if await self._change_presence(tx, agent_id, status, utc_now(), cause=None) is None:
                raise UnknownAgent(agent_id)
            return None

        await self._uow.run(work)
        await self._dispatcher.drain(agent_ids={agent_id}, sweep=False)
        return await self._uow.reads.agents.get(agent_id)

    async def on_agent_status_changed(self, tx: RoutingTransaction, event: Envelope[AgentStatusChanged]) -> None:
        """Applied only if newer than the presence in force; a stale event (delayed, replayed from the
        DLQ, overtaken by a PATCH) is acknowledged and ignored, not an error."""
        agent_id = event.data.agent_id
        try:
            status = Presence(event.data.status)
        except ValueError:
            raise RejectedEvent(
                f"invalid status {event.data.status[:50]!r} for agent {agent_id}: expected available, away or offline"
            ) from None
        agent = await tx.agents.get(agent_id)
        if agent is None:
            raise RejectedEvent(f"unknown agent {agent_id}")
        at = presence_instant(event.data.changed_at, utc_now())
        if supersedes(at, agent.presence_changed_at) and await self._change_presence(
            tx, agent_id, status, at, cause=event, only_if_newer=True
        ):
            return
        log.info("ignored stale presence event %s: changed at %s, not after the presence in force", event.id, at)
        tx.on_commit(self._metrics.stale_presence_events.inc)

    async def _change_presence(
        self, tx: RoutingTransaction, agent_id: str, status: Presence, at: datetime, cause: Envelope | None,
        only_if_newer: bool = False,
    ) -> Agent | None:
        changed = await tx.agents.set_status(agent_id, status, at, only_if_newer=only_if_newer)
        if changed is None:
            return None
        agent, before_change = changed
        before = before_change.status
        self._record_available(tx, before_change, at)
        if status is not Presence.AVAILABLE and before is not status:
            await self._requeue_held(tx, agent_id, status, cause)
        if status is Presence.AVAILABLE:
            self._dispatcher.wake(agent_id=agent_id)
        return agent

    @staticmethod
    def _record_available(tx: RoutingTransaction, before: Agent, until: datetime) -> None:
        """An agent available until a change of presence (or a profile stating it again): that stretch for planning."""
        if before.status is Presence.AVAILABLE and before.presence_changed_at:
            tx.planning.record(history.available_during(before.presence_changed_at, until))

    async def _requeue_held(
        self, tx: RoutingTransaction, agent_id: str, status: Presence, cause: Envelope | None
    ) -> None:
        """Offers always go back to the queue; assigned tickets too when UNASSIGN_ON_PRESENCE names `status`."""
        for ticket in await tx.tickets.offers_of(agent_id):
            await self._offers.return_offer(tx, ticket, OfferOutcome.EXPIRED, cause=cause)
        if status not in self._config.unassign_on:
            return
        for ticket in await tx.tickets.held_by(agent_id, [RoutedTicketState.ASSIGNED]):
            now = utc_now()
            unassigned = ticket.unassign(status, now, self._config.policy)
            if unassigned is None or await tx.tickets.apply(unassigned) is None:
                continue
            await tx.agents.release_slot(agent_id, ticket.channel.value)
            if ticket.assigned_at:
                tx.planning.record(history.handled(ticket.channel.value, ticket.required_skills, ticket.assigned_at, now))
            self._publisher.publish(tx, ticket, unassigned.facts, cause)
            tx.on_commit(self._metrics.unassignments.inc)
            self._dispatcher.wake(ticket_id=ticket.ticket_id)

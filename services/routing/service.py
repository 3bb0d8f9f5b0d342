"""Routing's use cases: put tickets in front of the right agent, or in the queue until one is free."""

import logging

from services.routing.domain import Agent, AgentProfile, WaitingTicket, can_take, choose_agent
from services.routing.repository import AgentRepository, RoutedTicketRepository
from shared import topics
from shared.clock import utc_now
from shared.envelope import Envelope, new_event
from shared.events import TicketAssigned, TicketCreated
from shared.mongo import Lease, Transaction, UnitOfWork

log = logging.getLogger(__name__)

QUEUE_SCAN_LIMIT = 500
SWEEP_LIMIT = 100


class Routing:
    def __init__(self, uow: UnitOfWork, source: str) -> None:
        self._uow = uow
        self._source = source

    async def on_ticket_created(self, tx: Transaction, event: Envelope[TicketCreated]) -> None:
        ticket = WaitingTicket(
            ticket_id=event.data.ticket_id,
            priority=event.data.priority,
            required_skills=event.data.required_skills,
            created_at=event.data.created_at,
        )
        if await RoutedTicketRepository(tx.db, tx.session).enqueue(ticket):
            await self._assign_to_best_agent(tx, ticket, cause=event)

    async def put_agent(self, agent_id: str, profile: AgentProfile) -> Agent:
        """Create or update an agent, then give them the best waiting tickets they can take."""

        async def work(tx: Transaction) -> Agent:
            agents = AgentRepository(tx.db, tx.session)
            current = await agents.get(agent_id)
            agent = (
                current.with_profile(profile)
                if current
                else Agent(id=agent_id, load=0, **profile.model_dump())
            )
            await agents.save(agent)
            await self._fill_from_queue(tx, agent)
            return await agents.get(agent_id)

        return await self._uow.run(work)

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await AgentRepository(self._uow.db).get(agent_id)

    async def sweep_queue(self, lease: Lease) -> None:
        """Match waiting tickets again: heals any assignment a race or a crash left undone."""
        if await lease.acquire():
            await self._uow.run(self._sweep)

    async def _sweep(self, tx: Transaction) -> None:
        if not await AgentRepository(tx.db, tx.session).anyone_free():
            return
        for ticket in await RoutedTicketRepository(tx.db, tx.session).waiting(SWEEP_LIMIT):
            await self._assign_to_best_agent(tx, ticket, cause=None)

    async def _assign_to_best_agent(self, tx: Transaction, ticket: WaitingTicket, cause: Envelope | None) -> None:
        agents = AgentRepository(tx.db, tx.session)
        candidates = await agents.candidates_for(ticket)
        while (match := choose_agent(candidates, ticket)) is not None:
            if await self._assign(tx, ticket, match.agent, match.reason, cause):
                return
            candidates.remove(match.agent)  # lost the slot to another replica: try the next best

    async def _fill_from_queue(self, tx: Transaction, agent: Agent) -> None:
        for ticket in await RoutedTicketRepository(tx.db, tx.session).waiting(QUEUE_SCAN_LIMIT):
            if not can_take(agent, ticket):
                continue
            reason = f"next in queue for {agent.id} when they had capacity ({agent.load}/{agent.capacity} before)"
            if not await self._assign(tx, ticket, agent, reason, cause=None):
                return
            agent = agent.model_copy(update={"load": agent.load + 1})

    async def _assign(
        self, tx: Transaction, ticket: WaitingTicket, agent: Agent, reason: str, cause: Envelope | None
    ) -> bool:
        if not await AgentRepository(tx.db, tx.session).claim_slot(agent.id):
            return False
        if not await RoutedTicketRepository(tx.db, tx.session).mark_assigned(ticket.ticket_id, agent.id):
            raise RuntimeError(f"ticket {ticket.ticket_id} was assigned concurrently")  # rolls the slot back
        assigned = TicketAssigned(ticket_id=ticket.ticket_id, agent_id=agent.id, reason=reason, assigned_at=utc_now())
        tx.publish(topics.ROUTING, new_event(assigned, source=self._source, subject=ticket.ticket_id, cause=cause))
        log.info("assigned %s to %s", ticket.ticket_id, agent.id)
        return True

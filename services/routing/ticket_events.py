"""What happens to tickets elsewhere, as routing keeps it: the queue and the capacity tickets hold.

Each handler runs inside the consumer's batch transaction and only records the change (a ticket joined
or left the queue, moved up in it, freed a slot); the dispatcher serves the queue afterwards.
"""

import re
from collections.abc import Sequence

from services.routing.dispatcher import Dispatcher
from services.routing.domain import RoutedTicket, RoutedTicketState, RoutingConfig, WaitingTicket
from services.routing.planning import history
from services.routing.repository import RoutingTransaction
from shared.clock import utc_now
from shared.consumer import RejectedEvent
from shared.envelope import Envelope
from shared.events import (
    SKILL_PATTERN,
    SlaWarning,
    TicketClosed,
    TicketCreated,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
)

_SKILL = re.compile(SKILL_PATTERN)


class TicketEvents:
    def __init__(self, config: RoutingConfig, dispatcher: Dispatcher) -> None:
        self._policy = config.policy
        self._dispatcher = dispatcher

    async def prefetch(self, tx: RoutingTransaction, events: Sequence[Envelope]) -> None:
        """Before a consumer batch's handlers: the tickets its events are about, in one read."""
        ticket_ids = [ticket_id for event in events if (ticket_id := getattr(event.data, "ticket_id", None))]
        await tx.tickets.preload(ticket_ids)

    async def on_ticket_created(self, tx: RoutingTransaction, event: Envelope[TicketCreated]) -> None:
        data = event.data
        invalid = [skill for skill in (*data.required_skills, *data.required_skill_levels) if not _SKILL.match(skill)]
        if invalid:
            raise RejectedEvent(f"ticket {data.ticket_id}: skills not valid: {', '.join(map(repr, invalid[:5]))[:300]}")
        needs = WaitingTicket(
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
        ticket = RoutedTicket.queue(needs, self._policy, correlation_id=event.correlationid, causation_id=str(event.id))
        if await tx.tickets.enqueue(ticket):
            tx.planning.record(history.arrived(ticket.channel.value, ticket.required_skills, ticket.created_at))
            self._dispatcher.wake(ticket_id=ticket.ticket_id)

    async def on_priority_changed(self, tx: RoutingTransaction, event: Envelope[TicketPriorityChanged]) -> None:
        ticket = await self._known_ticket(tx, event.data.ticket_id)
        await tx.tickets.apply(ticket.reprioritise(event.data.priority))
        self._dispatcher.wake(ticket_id=ticket.ticket_id)

    async def on_sla_warning(self, tx: RoutingTransaction, event: Envelope[SlaWarning]) -> None:
        ticket = await self._known_ticket(tx, event.data.ticket_id)
        if (warned := ticket.warn_sla()) is None:
            return  # nothing waits any more, or it moved up already
        await tx.tickets.apply(warned)
        self._dispatcher.wake(ticket_id=ticket.ticket_id)

    async def on_solved(self, tx: RoutingTransaction, event: Envelope[TicketSolved]) -> None:
        await self._finish(tx, event.data.ticket_id, "solved")

    async def on_closed(self, tx: RoutingTransaction, event: Envelope[TicketClosed]) -> None:
        await self._finish(tx, event.data.ticket_id, "closed")

    async def _finish(self, tx: RoutingTransaction, ticket_id: str, how: str) -> None:
        """The ticket leaves routing's hands: the queue if it waited, its agent's capacity if it was held."""
        ticket = await self._known_ticket(tx, ticket_id)
        now = utc_now()
        if (finished := ticket.finish(how, now)) is None:
            return
        if await tx.tickets.apply(finished) is None:
            raise RuntimeError(f"ticket {ticket_id} changed concurrently")  # the batch is retried
        if ticket.state is RoutedTicketState.ASSIGNED and ticket.assigned_at:
            tx.planning.record(history.handled(ticket.channel.value, ticket.required_skills, ticket.assigned_at, now))
        if agent_id := ticket.slot_holder:
            await tx.agents.release_slot(agent_id, ticket.channel.value)
            self._dispatcher.wake(agent_id=agent_id)

    async def on_reopened(self, tx: RoutingTransaction, event: Envelope[TicketReopened]) -> None:
        """Back to the queue, marked for the previous agent: the dispatcher gives it to them if they have room."""
        ticket = await self._known_ticket(tx, event.data.ticket_id)
        if (reopened := ticket.reopen(event.data.previous_assignee_id, utc_now(), self._policy)) is None:
            return
        await tx.tickets.apply(reopened)
        self._dispatcher.wake(ticket_id=ticket.ticket_id)

    @staticmethod
    async def _known_ticket(tx: RoutingTransaction, ticket_id: str) -> RoutedTicket:
        ticket = await tx.tickets.get(ticket_id)
        if ticket is None:
            raise RejectedEvent(f"unknown ticket {ticket_id}")
        return ticket

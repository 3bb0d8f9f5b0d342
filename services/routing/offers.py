"""Offers: an agent in offer mode accepts or rejects the ticket offered; unanswered, it expires.

A rejected or lapsed offer sends the ticket back to the queue for the next agent, and keeps that
agent from it for the decline cooldown; when a cooldown ends the ticket is looked at again.
"""

from dataclasses import dataclass

from services.routing.dispatcher import Dispatcher
from services.routing.domain import OfferClosed, RoutedTicket, RoutingConfig, Transition, UnknownOffer
from services.routing.metrics import RoutingMetrics
from services.routing.planning import history
from services.routing.publishing import TicketPublisher
from services.routing.repository import RoutingTransaction
from shared.clock import now_ms, to_ms, utc_now
from shared.envelope import Envelope
from shared.events import OfferOutcome
from shared.mongo import UnitOfWork

EXPIRY_BATCH = 200


@dataclass(frozen=True)
class OfferAnswer:
    offer_id: str
    ticket_id: str
    agent_id: str
    outcome: OfferOutcome


class Offers:
    def __init__(
        self, uow: UnitOfWork[RoutingTransaction], config: RoutingConfig, metrics: RoutingMetrics,
        publisher: TicketPublisher, dispatcher: Dispatcher,
    ) -> None:
        self._uow = uow
        self._config = config
        self._metrics = metrics
        self._publisher = publisher
        self._dispatcher = dispatcher

    async def answer_offer(self, offer_id: str, *, accept: bool) -> OfferAnswer:
        async def work(tx: RoutingTransaction) -> OfferAnswer:
            ticket = await tx.tickets.by_offer(offer_id)
            if ticket is None:
                raise UnknownOffer(offer_id)
            agent_id, now = ticket.assignee_id, utc_now()
            if not accept:
                rejected = ticket.reject(offer_id, now, self._config.decline_cooldown)
                await self._returned(tx, ticket, OfferOutcome.REJECTED, rejected, cause=None)
                return OfferAnswer(offer_id, ticket.ticket_id, agent_id, OfferOutcome.REJECTED)
            agent = await tx.agents.get(agent_id)
            accepted = ticket.accept(offer_id, now, team=agent.team if agent else None)
            if await tx.tickets.apply(accepted) is None:
                raise OfferClosed(f"offer {offer_id} is no longer open")
            self._publisher.publish(tx, ticket, accepted.facts)
            if ticket.customer_id:
                tx.affinities.remember(ticket.customer_id, agent_id, to_ms(now))
            tx.planning.record(history.assigned(ticket.channel.value, ticket.required_skills, ticket.queued_at, now))
            wait = (now - ticket.created_at).total_seconds()
            tx.on_commit(self._metrics.offers.labels(outcome="accepted").inc)
            tx.on_commit(self._metrics.assignments.labels(mode="offer").inc)
            tx.on_commit(lambda: self._metrics.queue_wait.observe(max(wait, 0)))
            return OfferAnswer(offer_id, ticket.ticket_id, agent_id, OfferOutcome.ACCEPTED)

        answer = await self._uow.run(work)
        if answer.outcome is OfferOutcome.REJECTED:
            await self._dispatcher.drain(ticket_ids={answer.ticket_id}, agent_ids={answer.agent_id}, sweep=False)
        return answer

    async def return_offer(
        self, tx: RoutingTransaction, ticket: RoutedTicket, outcome: OfferOutcome, cause: Envelope | None
    ) -> bool:
        """Lapsed, or its agent went away: the ticket goes back to the queue; False if it was answered meanwhile."""
        returned = ticket.return_offer(outcome, utc_now(), self._config.decline_cooldown)
        return await self._returned(tx, ticket, outcome, returned, cause)

    async def _returned(
        self, tx: RoutingTransaction, ticket: RoutedTicket, outcome: OfferOutcome, returned: Transition,
        cause: Envelope | None,
    ) -> bool:
        """Store the offer's return: its slot freed, its answer published, the ticket and agent served again."""
        if await tx.tickets.apply(returned) is None:
            return False
        agent_id = ticket.assignee_id
        await tx.agents.release_slot(agent_id, ticket.channel.value)
        self._publisher.publish(tx, ticket, returned.facts, cause)
        tx.on_commit(lambda: self._metrics.offers.labels(outcome=outcome.value).inc())
        self._dispatcher.wake(ticket_id=ticket.ticket_id, agent_id=agent_id)
        return True

    async def expire_offers(self) -> int:
        if not await self._uow.reads.tickets.offers_expired(now_ms(), 1):
            return 0

        async def work(tx: RoutingTransaction) -> int:
            expired = 0
            for ticket in await tx.tickets.offers_expired(now_ms(), EXPIRY_BATCH):
                expired += await self.return_offer(tx, ticket, OfferOutcome.EXPIRED, cause=None)
            return expired

        return await self._uow.run(work)

    async def revisit_declined(self) -> int:
        """Waiting tickets whose decline cooldown ended go back to the dispatcher, wherever they are in the queue."""
        if not await self._uow.reads.tickets.declines_lapsed(now_ms(), 1):
            return 0

        async def work(tx: RoutingTransaction) -> int:
            now = utc_now()
            revisited = 0
            for ticket in await tx.tickets.declines_lapsed(to_ms(now), EXPIRY_BATCH):
                if await tx.tickets.apply(ticket.revisit_declines(now, self._config.decline_cooldown)):
                    self._dispatcher.wake(ticket_id=ticket.ticket_id)
                    revisited += 1
            return revisited

        return await self._uow.run(work)

"""Escalation: the configured steps that relax a waiting ticket's requirements as it waits, one event each."""

from services.routing.dispatcher import Dispatcher
from services.routing.domain import RoutingConfig
from services.routing.metrics import RoutingMetrics
from services.routing.publishing import TicketPublisher
from services.routing.repository import RoutingTransaction
from shared.clock import now_ms, to_ms, utc_now
from shared.mongo import UnitOfWork

ESCALATION_BATCH = 500


class Escalation:
    def __init__(
        self, uow: UnitOfWork[RoutingTransaction], config: RoutingConfig, metrics: RoutingMetrics,
        publisher: TicketPublisher, dispatcher: Dispatcher,
    ) -> None:
        self._uow = uow
        self._policy = config.policy
        self._metrics = metrics
        self._publisher = publisher
        self._dispatcher = dispatcher

    async def escalate(self) -> int:
        """Apply the escalation steps that came due; the number applied."""
        if not self._policy.steps or not await self._uow.reads.tickets.escalation_due(now_ms(), 1):
            return 0

        async def work(tx: RoutingTransaction) -> int:
            now = utc_now()
            applied = 0
            for ticket in await tx.tickets.escalation_due(to_ms(now), ESCALATION_BATCH):
                escalated = ticket.escalate(now, self._policy)
                if await tx.tickets.apply(escalated) is None or not escalated.facts:
                    continue
                self._dispatcher.wake(ticket_id=ticket.ticket_id)
                self._publisher.publish(tx, ticket, escalated.facts)
                for step in escalated.facts:
                    tx.on_commit(lambda action=step.action: self._metrics.escalations.labels(action=action).inc())
                applied += len(escalated.facts)
            return applied

        return await self._uow.run(work)

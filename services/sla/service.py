"""SLA use cases: start clocks for new tickets and report them."""

from services.sla.domain import Clock, start_first_reply_clock
from services.sla.repository import ClockRepository
from shared import topics
from shared.envelope import Envelope, new_event
from shared.events import SlaClockStarted, TicketCreated
from shared.mongo import Transaction, UnitOfWork


class Sla:
    def __init__(self, uow: UnitOfWork, source: str, first_reply_target_seconds: int) -> None:
        self._uow = uow
        self._source = source
        self._first_reply_target = first_reply_target_seconds

    async def on_ticket_created(self, tx: Transaction, event: Envelope[TicketCreated]) -> None:
        clock = start_first_reply_clock(event.data.ticket_id, event.data.created_at, self._first_reply_target)
        if await ClockRepository(tx.db, tx.session).start(clock):
            started = SlaClockStarted(
                ticket_id=clock.ticket_id,
                metric=clock.metric.value,
                target_seconds=clock.target_seconds,
                started_at=clock.started_at,
                due_at=clock.due_at,
            )
            tx.publish(topics.SLA, new_event(started, source=self._source, subject=clock.ticket_id, cause=event))

    async def clocks_of(self, ticket_id: str) -> list[Clock]:
        return await ClockRepository(self._uow.db).of_ticket(ticket_id)

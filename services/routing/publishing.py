"""How routing publishes what happens to a ticket: on its topic, keyed by ticket, in the ticket's correlation."""

from collections.abc import Iterable

from services.routing.domain import RoutedTicket
from shared import topics
from shared.envelope import Envelope, new_event
from shared.events import Payload
from shared.mongo import Transaction


class TicketPublisher:
    def __init__(self, source: str) -> None:
        self._source = source

    def publish(
        self, tx: Transaction, ticket: RoutedTicket, facts: Iterable[Payload], cause: Envelope | None = None
    ) -> None:
        """Publish `facts` about `ticket` on commit, keeping the correlation id of the event that created it."""
        for payload in facts:
            event = new_event(
                payload,
                source=self._source,
                subject=ticket.ticket_id,
                cause=cause,
                correlation_id=ticket.correlation_id,
                causation_id=ticket.causation_id,
            )
            tx.publish(topics.ROUTING, event)

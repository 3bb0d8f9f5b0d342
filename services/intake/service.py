"""Intake's use cases: each runs in one transaction and publishes its events through the outbox."""

import hashlib
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from services.intake.domain import Ticket, assign, new_ticket_id, open_ticket
from services.intake.repository import IdempotencyKeys, TicketRepository
from shared import topics
from shared.clock import to_ms, utc_now
from shared.consumer import RejectedEvent
from shared.envelope import Envelope, new_event
from shared.events import TicketAssigned, TicketCreated, TicketSubmit
from shared.mongo import Transaction, UnitOfWork


class IdempotencyConflict(Exception):
    """The key was used before for a different submission."""


class ConcurrentEdit(Exception):
    """Another writer changed the ticket first; the work is retried on the fresh version."""


@dataclass(frozen=True)
class Submitted:
    ticket: Ticket
    replayed: bool


class Intake:
    def __init__(self, uow: UnitOfWork, source: str) -> None:
        self._uow = uow
        self._source = source

    async def submit(self, submission: TicketSubmit, *, idempotency_key: str | None = None) -> Submitted:
        """Open a ticket; the same key with the same submission returns the first ticket again."""
        fingerprint = hashlib.sha256(submission.model_dump_json().encode()).hexdigest()
        key = f"http:{idempotency_key}" if idempotency_key else None

        async def work(tx: Transaction) -> Submitted:
            if key:
                earlier = await self._replay(tx, key, fingerprint)
                if earlier:
                    return earlier
            ticket = await self._open(tx, submission, cause=None)
            if key:
                await IdempotencyKeys(tx.db, tx.session).remember(
                    key, fingerprint=fingerprint, ticket_id=ticket.id, at_ms=to_ms(ticket.created_at)
                )
            return Submitted(ticket, replayed=False)

        try:
            return await self._uow.run(work)
        except DuplicateKeyError:
            # A concurrent request with the same key won the race: answer with its ticket.
            return await self._uow.run(lambda tx: self._replay(tx, key, fingerprint))

    async def on_submit_command(self, tx: Transaction, event: Envelope[TicketSubmit]) -> None:
        """`ticket.submit` from another system; the consumer's inbox already drops redeliveries."""
        await self._open(tx, event.data, cause=event)

    async def on_assigned(self, tx: Transaction, event: Envelope[TicketAssigned]) -> None:
        tickets = TicketRepository(tx.db, tx.session)
        ticket = await tickets.get(event.data.ticket_id)
        if ticket is None:
            raise RejectedEvent(f"unknown ticket {event.data.ticket_id}")
        if not await tickets.replace(assign(ticket, event.data.agent_id, utc_now()), expected_version=ticket.version):
            raise ConcurrentEdit(f"ticket {ticket.id} changed while recording its assignment")  # retried

    async def _open(self, tx: Transaction, submission: TicketSubmit, cause: Envelope | None) -> Ticket:
        now = utc_now()
        ticket = open_ticket(submission, ticket_id=new_ticket_id(now), now=now)
        await TicketRepository(tx.db, tx.session).add(ticket)
        created = TicketCreated(
            ticket_id=ticket.id,
            channel=ticket.channel,
            customer=ticket.customer,
            subject=ticket.subject,
            priority=ticket.priority,
            required_skills=ticket.required_skills,
            created_at=ticket.created_at,
        )
        tx.publish(topics.TICKETS, new_event(created, source=self._source, subject=ticket.id, cause=cause))
        return ticket

    async def _replay(self, tx: Transaction, key: str, fingerprint: str) -> Submitted | None:
        earlier = await IdempotencyKeys(tx.db, tx.session).find(key)
        if earlier is None:
            return None
        if earlier["fingerprint"] != fingerprint:
            raise IdempotencyConflict
        ticket = await TicketRepository(tx.db, tx.session).get(earlier["ticket_id"])
        return Submitted(ticket, replayed=True)

"""Intake's use cases: each runs in one transaction and publishes its events through the outbox.

The decisions live in `domain.py` (lifecycle) and `triage.py`; this module loads, calls them,
stores the result and publishes the facts they returned.
"""

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from services.intake import domain
from services.intake.domain import (
    Change,
    InvalidSubmission,
    Message,
    Ticket,
    TicketClosedForReplies,
    new_message_id,
    new_ticket_id,
    open_ticket,
)
from services.intake.email_inbound import InboundEmail
from services.intake.repository import IntakeTransaction, customer_of
from services.intake.triage import Triage, TriageInput
from shared import topics
from shared.clock import now_ms, to_ms, utc_now
from shared.consumer import RejectedEvent
from shared.envelope import Envelope, new_event
from shared.events import (
    AuthorType,
    Channel,
    CustomerNpsReceived,
    Priority,
    SlaClockEvent,
    TicketAssigned,
    TicketCreated,
    TicketCsatReceived,
    TicketStatus,
    TicketSubmit,
    TicketUnassigned,
)
from shared.group_commit import GroupCommit
from shared.mongo import UnitOfWork


class IdempotencyConflict(Exception):
    """The key (or channel message id) was used before for a different submission."""


class ConcurrentEdit(Exception):
    """Another writer changed the ticket first; the work is retried on the fresh version."""


class VersionMismatch(Exception):
    """`If-Match` named a version that is no longer current."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the ticket is at version {current}; reload it and try again")
        self.current = current


class TicketNotFound(LookupError):
    pass


class ReplayedWebhook(Exception):
    """The same signed webhook request was already received."""


class SurveyAnswered(Exception):
    """The NPS survey has its answer already: the first one stands."""

    def __init__(self, survey_id: str) -> None:
        super().__init__(f"survey {survey_id} was already answered; an answer cannot be changed")


@dataclass(frozen=True)
class Submitted:
    ticket: Ticket
    replayed: bool


@dataclass(frozen=True)
class MessageAdded:
    ticket: Ticket
    """The ticket the message landed on: a new follow-up ticket when the original was closed."""
    message: Message | None
    follow_up_of: str | None = None


@dataclass(frozen=True)
class EmailReceived:
    ticket_id: str
    message_id: str | None
    action: str
    """`created`, `threaded` or `follow_up`."""
    replayed: bool = False


def fingerprint_of(submission: TicketSubmit) -> str:
    return hashlib.sha256(submission.model_dump_json().encode()).hexdigest()


class Intake:
    def __init__(
        self,
        uow: UnitOfWork[IntakeTransaction],
        source: str,
        triage: Triage | None = None,
        *,
        reopen_window: timedelta = timedelta(days=7),
        on_created: Callable[[Ticket], None] = lambda ticket: None,
    ) -> None:
        self._uow = uow
        # The API's writes: concurrent requests share a transaction, their customers read in one query.
        self._requests = GroupCommit(uow, prefetch=lambda tx, customer_ids: tx.customers.prefetch(customer_ids))
        self._source = source
        self._triage = triage
        self._reopen_window = reopen_window
        self._on_created = on_created

    # --- opening ---------------------------------------------------------------------------

    async def submit(self, submission: TicketSubmit, *, idempotency_key: str | None = None) -> Submitted:
        """Open a ticket; the same key (or channel message id) with the same submission returns the first ticket."""
        fingerprint = fingerprint_of(submission)
        keys = [key for key in (f"http:{idempotency_key}" if idempotency_key else None, _channel_key(submission)) if key]

        async def work(tx: IntakeTransaction) -> Submitted:
            for key in keys:
                if earlier := await self._replay(tx, key, fingerprint):
                    return earlier
            ticket = await self._open(tx, submission, cause=None)
            for key in keys:
                await tx.idempotency_keys.remember(
                    key,
                    fingerprint=fingerprint,
                    ticket_id=ticket.id,
                    at_ms=to_ms(ticket.created_at),
                    answer=ticket.model_dump(mode="json"),
                )
            return Submitted(ticket, replayed=False)

        try:
            return await self._requests.run(work, needs=submission.customer.id)
        except DuplicateKeyError:
            if not keys:
                raise
            # A concurrent request with the same key won the race: answer with its ticket.
            return await self._requests.run(lambda tx: self._replay(tx, keys[0], fingerprint))

    async def on_submit_command(self, tx: IntakeTransaction, event: Envelope[TicketSubmit]) -> None:
        """`ticket.submit` from another system; the inbox drops redeliveries, the channel key resends."""
        key = _channel_key(event.data)
        fingerprint = fingerprint_of(event.data)
        if key:
            try:
                if await self._replay(tx, key, fingerprint):
                    return
            except IdempotencyConflict:
                raise RejectedEvent(f"external_id {event.data.external_id} was used for a different submission") from None
        try:
            ticket = await self._open(tx, event.data, cause=event)
        except InvalidSubmission as invalid:
            raise RejectedEvent(str(invalid)) from None
        if key:
            await tx.idempotency_keys.remember(
                key, fingerprint=fingerprint, ticket_id=ticket.id, at_ms=to_ms(ticket.created_at)
            )

    async def _open(
        self, tx: IntakeTransaction, submission: TicketSubmit, cause: Envelope | None, follow_up_of: Ticket | None = None
    ) -> Ticket:
        now = utc_now()
        domain.channel_metadata(submission.channel, submission.metadata)  # refuse before writing anything
        profile = await tx.customers.upsert(submission.customer, to_ms(now))
        customer = customer_of(profile)
        triaged = None
        if self._triage is not None:
            triaged = self._triage.triage(
                TriageInput(
                    subject=submission.subject,
                    body=submission.body,
                    channel=submission.channel,
                    tier=customer.tier,
                    priority=submission.priority,
                    required_skills=submission.required_skills,
                    language=submission.language,
                    category=submission.category,
                    tags=submission.tags,
                )
            )
        previous_agent = (follow_up_of.assignee_id if follow_up_of else None) or profile.get("last_agent_id")
        ticket = open_ticket(
            submission,
            ticket_id=new_ticket_id(now),
            now=now,
            triaged=triaged,
            customer=customer,
            previous_agent_id=previous_agent,
            follow_up_of=follow_up_of.id if follow_up_of else None,
        )
        await tx.tickets.add(ticket)
        created = TicketCreated(
            ticket_id=ticket.id,
            channel=ticket.channel,
            customer=ticket.customer,
            subject=ticket.subject,
            priority=ticket.priority,
            required_skills=ticket.required_skills,
            created_at=ticket.created_at,
            language=ticket.language,
            sentiment=ticket.sentiment,
            category=ticket.category,
            tags=ticket.tags,
            triage_reasons=ticket.triage_reasons,
            previous_agent_id=ticket.previous_agent_id,
            follow_up_of=ticket.follow_up_of,
        )
        tx.publish(topics.TICKETS, new_event(created, source=self._source, subject=ticket.id, cause=cause))
        tx.on_commit(lambda: self._on_created(ticket))
        return ticket

    async def _replay(self, tx: IntakeTransaction, key: str, fingerprint: str) -> Submitted | None:
        earlier = await tx.idempotency_keys.find(key)
        if earlier is None:
            return None
        if earlier["fingerprint"] != fingerprint:
            raise IdempotencyConflict
        if earlier.get("answer"):
            return Submitted(Ticket.model_validate(earlier["answer"]), replayed=True)
        ticket = await tx.tickets.get(earlier["ticket_id"])
        return Submitted(ticket, replayed=True)

    # --- the lifecycle ---------------------------------------------------------------------

    async def add_message(
        self, ticket_id: str, *, author_type: AuthorType, author_id: str | None, body: str, public: bool
    ) -> MessageAdded:
        """A reply or note; a customer's reply to a closed (or long-solved) ticket opens a follow-up instead."""

        async def work(tx: IntakeTransaction) -> MessageAdded:
            ticket = await self._load(tx, ticket_id)
            return await self._add_message(tx, ticket, author_type, author_id, body, public, cause=None)

        return await self._with_retries(work)

    async def _add_message(
        self,
        tx: IntakeTransaction,
        ticket: Ticket,
        author_type: AuthorType,
        author_id: str | None,
        body: str,
        public: bool,
        *,
        cause: Envelope | None,
        channel: Channel | None = None,
    ) -> MessageAdded:
        now = utc_now()
        if domain.needs_follow_up(ticket, author_type, now, self._reopen_window):
            follow_up = await self._open(
                tx,
                TicketSubmit(
                    channel=channel or ticket.channel,
                    customer=ticket.customer,
                    subject=ticket.subject if ticket.subject.lower().startswith("re:") else f"Re: {ticket.subject}"[:500],
                    body=body,
                ),
                cause=cause,
                follow_up_of=ticket,
            )
            if ticket.status is TicketStatus.SOLVED:  # its window is over: close it for good
                await self._store(tx, domain.edit(ticket, now, status=TicketStatus.CLOSED), cause)
            return MessageAdded(follow_up, None, follow_up_of=ticket.id)
        message = Message(
            id=new_message_id(now),
            ticket_id=ticket.id,
            author_type=author_type,
            author_id=author_id,
            body=body,
            public=public,
            created_at=now,
        )
        change = domain.add_message(ticket, message, now, self._reopen_window)
        await tx.messages.add(message)
        await self._store(tx, change, cause)
        return MessageAdded(change.ticket, message)

    async def edit(
        self,
        ticket_id: str,
        *,
        status: TicketStatus | None,
        priority: Priority | None,
        tags: list[str] | None,
        expected_version: int | None,
    ) -> Ticket:
        async def work(tx: IntakeTransaction) -> Ticket:
            ticket = await self._load(tx, ticket_id)
            if expected_version is not None and ticket.version != expected_version:
                raise VersionMismatch(ticket.version)
            change = domain.edit(ticket, utc_now(), status=status, priority=priority, tags=tags)
            await self._store(tx, change, cause=None)
            return change.ticket

        return await self._with_retries(work, retry=expected_version is None)

    async def rate(self, ticket_id: str, score: int, comment: str | None) -> Ticket:
        async def work(tx: IntakeTransaction) -> Ticket:
            ticket = await self._load(tx, ticket_id)
            now = utc_now()
            rated = domain.rate(ticket, score, comment, now)
            if not await tx.tickets.replace(rated, expected_version=ticket.version):
                raise ConcurrentEdit(ticket.id)
            received = TicketCsatReceived(
                ticket_id=ticket.id, score=score, comment=comment, assignee_id=ticket.assignee_id, rated_at=now
            )
            tx.publish(topics.TICKETS, new_event(received, source=self._source, subject=ticket.id))
            return rated

        return await self._with_retries(work)

    async def answer_nps(
        self, *, survey_id: str, customer_id: str, ticket_id: str, score: int, comment: str | None
    ) -> CustomerNpsReceived:
        """Record the customer's answer to a relationship survey and publish it, once per survey."""

        async def work(tx: IntakeTransaction) -> CustomerNpsReceived:
            answers = tx.nps_answers
            if await answers.answered(survey_id):
                raise SurveyAnswered(survey_id)
            answer = CustomerNpsReceived(
                survey_id=survey_id,
                customer_id=customer_id,
                ticket_id=ticket_id,
                score=score,
                comment=comment,
                answered_at=utc_now(),
            )
            await answers.add(answer)
            # Keyed by the ticket, as its CSAT is: on the ticket's partition, after its solved event.
            tx.publish(topics.TICKETS, new_event(answer, source=self._source, subject=ticket_id))
            return answer

        try:
            return await self._requests.run(work)
        except DuplicateKeyError:  # another answer to the survey was stored between the check and the insert
            raise SurveyAnswered(survey_id) from None

    async def close_solved(self) -> None:
        """Housekeeping: solved tickets whose reopen window is over become closed."""
        cutoff = now_ms() - int(self._reopen_window.total_seconds() * 1000)

        async def work(tx: IntakeTransaction) -> None:
            for ticket in await tx.tickets.solved_before(cutoff):
                await self._store(tx, domain.close_if_due(ticket, utc_now(), self._reopen_window), cause=None)

        await self._uow.run(work)

    async def _store(self, tx: IntakeTransaction, change: Change, cause: Envelope | None) -> None:
        if not change.changed:
            return
        if not await tx.tickets.replace(change.ticket, expected_version=change.ticket.version - 1):
            raise ConcurrentEdit(change.ticket.id)
        for fact in change.facts:
            tx.publish(topics.TICKETS, new_event(fact, source=self._source, subject=change.ticket.id, cause=cause))

    async def _load(self, tx: IntakeTransaction, ticket_id: str) -> Ticket:
        ticket = await tx.tickets.get(ticket_id)
        if ticket is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        return ticket

    async def _with_retries(self, work, *, retry: bool = True, attempts: int = 5):
        """A concurrent writer won: read again and redo, unless the caller pinned a version (then 412)."""
        for attempt in range(attempts):
            try:
                return await self._requests.run(work)
            except ConcurrentEdit:
                if not retry or attempt == attempts - 1:
                    raise

    # --- email -----------------------------------------------------------------------------

    async def receive_email(self, email: InboundEmail, *, signature: str, signature_expires_ms: int) -> EmailReceived:
        """A new ticket, or a reply threaded into its ticket; the same Message-ID twice gives the first answer."""
        key = f"email:{email.message_id}" if email.message_id else None

        async def work(tx: IntakeTransaction) -> EmailReceived:
            if not await tx.seen_signatures.first_use(signature, signature_expires_ms):
                raise ReplayedWebhook("this signed request was already received")
            keys = tx.idempotency_keys
            if key and (earlier := await keys.find(key)):
                return EmailReceived(earlier["ticket_id"], earlier.get("message_id"), earlier["action"], replayed=True)
            threads = tx.email_threads
            tickets = tx.tickets
            ticket = None
            thread_id = await threads.ticket_of(email.replied_to) or email.ticket_reference()
            if thread_id:
                ticket = await tickets.get(thread_id)
            if ticket is not None and not _same_sender(ticket, email):
                ticket = None  # a ticket id is guessable: only its customer's mail threads into it
            if ticket is not None:
                customer_id = ticket.customer.id
                added = await self._add_message(
                    tx, ticket, AuthorType.CUSTOMER, customer_id, email.body, True, cause=None, channel=Channel.EMAIL
                )
                result = EmailReceived(
                    added.ticket.id,
                    added.message.id if added.message else None,
                    "follow_up" if added.follow_up_of else "threaded",
                )
            else:
                metadata = {"message_id": email.message_id, "to": email.to}
                submission = TicketSubmit(
                    channel=Channel.EMAIL,
                    customer={"email": email.from_email, "name": email.from_name},
                    subject=email.subject,
                    body=email.body,
                    metadata={k: v[:998] for k, v in metadata.items() if v},
                )
                opened = await self._open(tx, submission, cause=None)
                result = EmailReceived(opened.id, None, "created")
            if email.message_id:
                await threads.remember(email.message_id, result.ticket_id)
            if key:
                await keys.remember(
                    key,
                    fingerprint=email.message_id or "",
                    ticket_id=result.ticket_id,
                    at_ms=now_ms(),
                    message_id=result.message_id,
                    action=result.action,
                )
            return result

        return await self._with_retries(work)

    async def purge_seen_signatures(self) -> None:
        await self._uow.run(lambda tx: tx.seen_signatures.purge_expired())

    # --- the consumer's batches ------------------------------------------------------------

    async def prefetch(self, tx: IntakeTransaction, events: Sequence[Envelope]) -> None:
        """What a consumer batch's handlers read, in one query per collection: the tickets routing's and sla's
        events are about, then the customers of the submissions and of the tickets being assigned."""
        tickets = tx.tickets
        await tickets.prefetch(event.data.ticket_id for event in events if not isinstance(event.data, TicketSubmit))
        customers = [event.data.customer for event in events if isinstance(event.data, TicketSubmit)]
        for event in events:
            if isinstance(event.data, TicketAssigned) and (ticket := await tickets.get(event.data.ticket_id)):
                customers.append(ticket.customer)
        await tx.customers.prefetch(customer.id for customer in customers if customer.id)

    # --- routing's events ------------------------------------------------------------------

    async def on_assigned(self, tx: IntakeTransaction, event: Envelope[TicketAssigned]) -> None:
        """The ticket's replacement is queued: a version changed meanwhile fails the batch, which is retried."""
        tickets = tx.tickets
        ticket = await tickets.get(event.data.ticket_id)
        if ticket is None:
            raise RejectedEvent(f"unknown ticket {event.data.ticket_id}")
        tickets.replace_later(domain.assign(ticket, event.data.agent_id, utc_now()), expected_version=ticket.version)
        if ticket.customer.id:
            await tx.customers.remember_agent(ticket.customer.id, event.data.agent_id, ticket.id)

    async def on_sla_event(self, tx: IntakeTransaction, event: Envelope[SlaClockEvent]) -> None:
        """Project sla's clocks onto the ticket view; a ticket intake does not know is no one's concern here."""
        if not _METRIC.fullmatch(event.data.metric):
            raise RejectedEvent(f"metric {event.data.metric[:50]!r} is not a metric name")
        await tx.tickets.project_sla(
            event.data.ticket_id, event.data.metric, lambda current: domain.project_sla(current, event.data)
        )

    async def on_unassigned(self, tx: IntakeTransaction, event: Envelope[TicketUnassigned]) -> None:
        tickets = tx.tickets
        ticket = await tickets.get(event.data.ticket_id)
        if ticket is None:
            raise RejectedEvent(f"unknown ticket {event.data.ticket_id}")
        unassigned = domain.unassign(ticket, event.data.agent_id, utc_now())
        if unassigned is not ticket:
            tickets.replace_later(unassigned, expected_version=ticket.version)  # as in `on_assigned`


def _same_sender(ticket: Ticket, email: InboundEmail) -> bool:
    known = ticket.customer.email
    return known is None or str(known).lower() == email.from_email.lower()


_METRIC = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _channel_key(submission: TicketSubmit) -> str | None:
    return f"channel:{submission.channel}:{submission.external_id}" if submission.external_id else None


__all__ = [
    "ConcurrentEdit",
    "EmailReceived",
    "IdempotencyConflict",
    "Intake",
    "InvalidSubmission",
    "MessageAdded",
    "ReplayedWebhook",
    "Submitted",
    "SurveyAnswered",
    "TicketClosedForReplies",
    "TicketNotFound",
    "VersionMismatch",
]

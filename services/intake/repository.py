"""MongoDB adapters for intake: tickets, messages, customers, and the keys that make intake idempotent.

Equalities are written with `eq`, so the embedded server serves them from an index too (see
`shared.mongo_filters`).

Within a transaction, tickets and customers are read through `Transaction.cache` (a consumer batch
reads all of its own up front, `prefetch`), and every write keeps the cached document true, so
writes whose result no one needs can be queued (`Transaction.write_later`) without a read by id
ever having to send them first.
"""

import base64
import re
import secrets
from collections.abc import Iterable, Mapping
from functools import cached_property

from pymongo import ASCENDING, DESCENDING
from pymongo.operations import InsertOne, ReplaceOne, UpdateOne

from services.intake.domain import TICKET_ID_PATTERN, Message, SlaSummary, Ticket
from shared.clock import from_ms, now_ms, to_ms
from shared.events import Customer, CustomerNpsReceived
from shared.mongo import KnownDocuments, Transaction
from shared.mongo_filters import eq


def _to_document(ticket: Ticket) -> dict:
    document = ticket.model_dump(mode="json", exclude={"id", "created_at", "updated_at", "solved_at", "csat", "sla"})
    document.update(
        _id=ticket.id,
        created_ms=to_ms(ticket.created_at),
        updated_ms=to_ms(ticket.updated_at),
        solved_ms=to_ms(ticket.solved_at) if ticket.solved_at else None,
        csat=(
            {"score": ticket.csat.score, "comment": ticket.csat.comment, "rated_ms": to_ms(ticket.csat.rated_at)}
            if ticket.csat
            else None
        ),
        sla={metric: _sla_document(summary) for metric, summary in ticket.sla.items()},
    )
    return document


def _sla_document(summary: SlaSummary) -> dict:
    document = summary.model_dump(mode="json", exclude={"due_at"})
    document["due_ms"] = to_ms(summary.due_at) if summary.due_at else None
    return document


def _sla_summary(document: dict) -> SlaSummary:
    return SlaSummary.model_validate({**document, "due_at": from_ms(document["due_ms"]) if document.get("due_ms") else None})


def _from_document(document: dict) -> Ticket:
    csat = document.get("csat")
    return Ticket.model_validate(
        {
            **document,
            "id": document["_id"],
            "created_at": from_ms(document["created_ms"]),
            "updated_at": from_ms(document["updated_ms"]),
            "solved_at": from_ms(document["solved_ms"]) if document.get("solved_ms") else None,
            "csat": {"score": csat["score"], "comment": csat.get("comment"), "rated_at": from_ms(csat["rated_ms"])}
            if csat
            else None,
            "sla": {metric: _sla_summary(clock) for metric, clock in (document.get("sla") or {}).items()},
        }
    )


class InvalidCursor(ValueError):
    pass


def encode_cursor(ticket_id: str) -> str:
    return base64.urlsafe_b64encode(ticket_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        ticket_id = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        ticket_id = ""
    if not re.fullmatch(TICKET_ID_PATTERN, ticket_id):
        raise InvalidCursor("cursor is not one this API gave out")
    return ticket_id


class TicketRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tickets = tx.db["tickets"]
        self._tx = tx
        self._session = tx.session
        self._known = KnownDocuments(self._tickets, tx)

    async def ensure_indexes(self) -> None:
        await self._tickets.create_index([("customer.id", ASCENDING), ("created_ms", ASCENDING)])
        await self._tickets.create_index([("customer.email", ASCENDING), ("created_ms", ASCENDING)])
        # No `_id` in compound indexes: the embedded Mongo-wire server cannot index it (ids sort by time anyway).
        await self._tickets.create_index([("status", ASCENDING), ("created_ms", DESCENDING)])
        await self._tickets.create_index([("assignee_id", ASCENDING), ("created_ms", DESCENDING)])
        await self._tickets.create_index([("status", ASCENDING), ("solved_ms", ASCENDING)])

    async def prefetch(self, ticket_ids: Iterable[str]) -> None:
        await self._known.load(ticket_ids)

    async def add(self, ticket: Ticket) -> None:
        """Queued: a new ticket's id is its own, so the insert cannot collide."""
        self._write_later(InsertOne(self._known.keep(_to_document(ticket))))

    async def get(self, ticket_id: str) -> Ticket | None:
        document = await self._known.get(ticket_id)
        return _from_document(document) if document else None

    async def replace(self, ticket: Ticket, *, expected_version: int) -> bool:
        """Optimistic concurrency: only replaces the version the caller read, and says whether it did."""
        await self._tx.flush()  # the ticket's own queued writes (its insert) go first
        document = _to_document(ticket)
        replaced = await self._tickets.replace_one(
            {"_id": ticket.id, "version": expected_version}, document, session=self._session
        )
        if not replaced.matched_count:
            self._known.forget(ticket.id)  # another version is stored: read it again
            return False
        self._known.keep(document)
        return True

    def replace_later(self, ticket: Ticket, *, expected_version: int) -> None:
        """Queued `replace`: if another version is stored by the time it is sent, it fails the whole
        transaction instead of answering False (as an upsert, it collides with that version's `_id`)."""
        document = self._known.keep(_to_document(ticket))
        self._write_later(ReplaceOne({"_id": ticket.id, "version": expected_version}, document, upsert=True))

    async def page(self, filters: Mapping[str, str], *, limit: int, after: str | None) -> tuple[list[Ticket], str | None]:
        """Newest first; `after` is the cursor of the previous page (the last id it showed)."""
        query: dict = eq({field: value for field, value in filters.items() if value is not None})
        if after is not None:
            query["_id"] = {"$lt": decode_cursor(after)}
        documents = (
            await self._tickets.find(query, session=self._session).sort("_id", DESCENDING).limit(limit + 1).to_list()
        )
        tickets = [_from_document(document) for document in documents[:limit]]
        more = len(documents) > limit
        return tickets, encode_cursor(tickets[-1].id) if more and tickets else None

    async def project_sla(self, ticket_id: str, metric: str, project) -> bool:
        """Set one SLA clock's summary, computed by `project(current)`; the version is not bumped. Queued."""
        document = await self._known.get(ticket_id)
        if document is None:
            return False
        clocks = document.get("sla") or {}
        projected = _sla_document(project(_sla_summary(clocks[metric]) if clocks.get(metric) else None))
        self._known.replace_later({**document, "sla": {**clocks, metric: projected}})
        return True

    async def solved_before(self, cutoff_ms: int, limit: int = 200) -> list[Ticket]:
        documents = (
            await self._tickets.find({**eq(status="solved"), "solved_ms": {"$lt": cutoff_ms}}, session=self._session)
            .limit(limit)
            .to_list()
        )
        return [_from_document(document) for document in documents]

    def _write_later(self, operation: InsertOne | ReplaceOne | UpdateOne) -> None:
        self._tx.write_later(self._tickets.name, operation)


class MessageRepository:
    def __init__(self, tx: Transaction) -> None:
        self._messages = tx.db["messages"]
        self._session = tx.session

    async def ensure_indexes(self) -> None:
        await self._messages.create_index([("ticket_id", ASCENDING), ("created_ms", ASCENDING)])

    async def add(self, message: Message) -> None:
        document = message.model_dump(mode="json", exclude={"id", "created_at"})
        document.update(_id=message.id, created_ms=to_ms(message.created_at))
        await self._messages.insert_one(document, session=self._session)

    async def of_ticket(self, ticket_id: str, limit: int = 500) -> list[Message]:
        documents = (
            await self._messages.find(eq(ticket_id=ticket_id), session=self._session)
            .sort("created_ms", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [
            Message.model_validate({**d, "id": d["_id"], "created_at": from_ms(d["created_ms"])}) for d in documents
        ]


class CustomerRepository:
    """Profiles keyed by the caller's customer id, or one intake makes for a customer known only by email."""

    def __init__(self, tx: Transaction) -> None:
        self._customers = tx.db["customers"]
        self._tx = tx
        self._session = tx.session
        self._known = KnownDocuments(self._customers, tx)

    async def ensure_indexes(self) -> None:
        await self._customers.create_index([("email", ASCENDING)])

    async def prefetch(self, customer_ids: Iterable[str]) -> None:
        await self._known.load(customer_ids)

    async def upsert(self, given: Customer, now: int) -> dict:
        """Find by id, else by email; fields the caller sent overwrite the stored ones. The write is queued:
        the profile it stores is the one found plus those fields."""
        existing = None
        if given.id is not None:
            existing = await self._known.get(given.id)
        elif given.email is not None:
            await self._tx.flush()  # a profile queued in this transaction may have that email
            existing = await self._customers.find_one(eq(email=str(given.email)), session=self._session)
        customer_id = existing["_id"] if existing else (given.id or f"cust-{secrets.token_hex(6)}")
        fields = {**given.model_dump(mode="json", exclude={"id"}, exclude_none=True), "updated_ms": now}
        profile = {**(existing or {"_id": customer_id, "created_ms": now}), **fields}
        self._known.replace_later(profile)  # the whole profile, as read in this transaction: a replace costs less
        return profile

    async def get(self, customer_id: str) -> dict | None:
        return await self._known.get(customer_id)

    async def remember_agent(self, customer_id: str, agent_id: str, ticket_id: str) -> None:
        """Queued; a profile that does not exist stays so."""
        profile = await self._known.get(customer_id)
        if profile is None:
            return
        self._known.replace_later({**profile, "last_agent_id": agent_id, "last_ticket_id": ticket_id})


def customer_of(profile: dict) -> Customer:
    return Customer.model_validate({**profile, "id": profile["_id"]})


class IdempotencyKeys:
    """What a submission key produced (a ticket, maybe a message), and a fingerprint of the request that used it.

    Keys are namespaced: `http:<Idempotency-Key>`, `channel:<channel>:<external id>`, `email:<Message-ID>`.
    """

    def __init__(self, tx: Transaction) -> None:
        self._keys = tx.db["idempotency_keys"]
        self._session = tx.session

    async def find(self, key: str) -> dict | None:
        return await self._keys.find_one({"_id": key}, session=self._session)

    async def remember(
        self,
        key: str,
        *,
        fingerprint: str,
        ticket_id: str,
        at_ms: int,
        message_id: str | None = None,
        action: str | None = None,
        answer: dict | None = None,
    ) -> None:
        """`answer` is the first response, given again verbatim to a repeat (the ticket may have moved on since)."""
        await self._keys.insert_one(
            {
                "_id": key,
                "fingerprint": fingerprint,
                "ticket_id": ticket_id,
                "message_id": message_id,
                "action": action,
                "answer": answer,
                "created_ms": at_ms,
            },
            session=self._session,
        )


class EmailThreads:
    """Message-IDs of inbound mails and the ticket each belongs to, so replies to them thread."""

    def __init__(self, tx: Transaction) -> None:
        self._threads = tx.db["email_threads"]
        self._session = tx.session

    async def ticket_of(self, message_ids: list[str]) -> str | None:
        if not message_ids:
            return None
        rows = await self._threads.find({"_id": {"$in": message_ids}}, session=self._session).to_list()
        by_id = {row["_id"]: row["ticket_id"] for row in rows}
        return next((by_id[m] for m in message_ids if m in by_id), None)

    async def remember(self, message_id: str, ticket_id: str) -> None:
        await self._threads.update_one(
            {"_id": message_id}, {"$set": {"ticket_id": ticket_id, "created_ms": now_ms()}}, upsert=True, session=self._session
        )


class SeenSignatures:
    """Webhook signatures used within the timestamp tolerance: the same signed request twice is a replay."""

    def __init__(self, tx: Transaction) -> None:
        self._seen = tx.db["webhook_signatures"]
        self._session = tx.session

    async def ensure_indexes(self) -> None:
        await self._seen.create_index([("expires_ms", ASCENDING)])

    async def first_use(self, signature: str, expires_ms: int) -> bool:
        if await self._seen.find_one({"_id": signature}, session=self._session):
            return False
        await self._seen.insert_one({"_id": signature, "expires_ms": expires_ms}, session=self._session)
        return True

    async def purge_expired(self) -> None:
        await self._seen.delete_many({"expires_ms": {"$lt": now_ms()}}, session=self._session)


class NpsAnswers:
    """Answers to notify's NPS surveys, one per survey: the survey id is the `_id`, so the primary key
    itself refuses a second answer, even two sent at once."""

    def __init__(self, tx: Transaction) -> None:
        self._answers = tx.db["nps_answers"]
        self._session = tx.session

    async def answered(self, survey_id: str) -> bool:
        return await self._answers.find_one({"_id": survey_id}, {"_id": 1}, session=self._session) is not None

    async def add(self, answer: CustomerNpsReceived) -> None:
        """Raises `DuplicateKeyError` when the survey was answered meanwhile."""
        document = answer.model_dump(mode="json", exclude={"survey_id", "answered_at"})
        document.update(_id=answer.survey_id, answered_ms=to_ms(answer.answered_at))
        await self._answers.insert_one(document, session=self._session)


class IntakeTransaction(Transaction):
    """A transaction of intake's, carrying its repositories (each built once, on first use)."""

    @cached_property
    def tickets(self) -> TicketRepository:
        return TicketRepository(self)

    @cached_property
    def messages(self) -> MessageRepository:
        return MessageRepository(self)

    @cached_property
    def customers(self) -> CustomerRepository:
        return CustomerRepository(self)

    @cached_property
    def idempotency_keys(self) -> IdempotencyKeys:
        return IdempotencyKeys(self)

    @cached_property
    def email_threads(self) -> EmailThreads:
        return EmailThreads(self)

    @cached_property
    def seen_signatures(self) -> SeenSignatures:
        return SeenSignatures(self)

    @cached_property
    def nps_answers(self) -> NpsAnswers:
        return NpsAnswers(self)

"""MongoDB adapters for intake: tickets and idempotency keys."""

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.intake.domain import Ticket
from shared.clock import from_ms, to_ms


def _to_document(ticket: Ticket) -> dict:
    document = ticket.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})
    document.update(_id=ticket.id, created_ms=to_ms(ticket.created_at), updated_ms=to_ms(ticket.updated_at))
    return document


def _from_document(document: dict) -> Ticket:
    return Ticket.model_validate(
        {
            **document,
            "id": document["_id"],
            "created_at": from_ms(document["created_ms"]),
            "updated_at": from_ms(document["updated_ms"]),
        }
    )


class TicketRepository:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._tickets = db["tickets"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._tickets.create_index([("customer.id", ASCENDING), ("created_ms", ASCENDING)])
        await self._tickets.create_index([("customer.email", ASCENDING), ("created_ms", ASCENDING)])

    async def add(self, ticket: Ticket) -> None:
        await self._tickets.insert_one(_to_document(ticket), session=self._session)

    async def get(self, ticket_id: str) -> Ticket | None:
        document = await self._tickets.find_one({"_id": ticket_id}, session=self._session)
        return _from_document(document) if document else None

    async def replace(self, ticket: Ticket, *, expected_version: int) -> bool:
        """Optimistic concurrency: only replaces the version the caller read."""
        replaced = await self._tickets.find_one_and_replace(
            {"_id": ticket.id, "version": expected_version},
            _to_document(ticket),
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return replaced is not None


class IdempotencyKeys:
    """Which ticket a submission key produced, and a fingerprint of the request that used it."""

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._keys = db["idempotency_keys"]
        self._session = session

    async def find(self, key: str) -> dict | None:
        return await self._keys.find_one({"_id": key}, session=self._session)

    async def remember(self, key: str, *, fingerprint: str, ticket_id: str, at_ms: int) -> None:
        await self._keys.insert_one(
            {"_id": key, "fingerprint": fingerprint, "ticket_id": ticket_id, "created_ms": at_ms},
            session=self._session,
        )

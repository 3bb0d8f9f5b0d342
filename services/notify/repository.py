"""MongoDB adapters for notify: deliveries, its view of tickets, agents' contacts, customers' preferences.

A delivery's `_id` is its deduplication key, so the primary key itself makes each (cause, recipient,
kind) deliver once, and its state is written in the same transaction as the consumer's inbox.
`claimed_until_ms` is the lease of the replica sending it: while it runs, no other replica claims
the delivery; if that replica dies, the delivery becomes claimable again.
"""

from dataclasses import dataclass

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.notify.domain import Delivery, DeliveryState
from services.notify.planner import AgentContact, Preferences, TicketView
from shared.clock import from_ms, now_ms, to_ms
from shared.mongo_filters import eq

_INSTANTS = {
    "next_attempt_at": "next_attempt_ms",
    "created_at": "created_ms",
    "sent_at": "sent_ms",
    "scheduled_for": "scheduled_for_ms",
}


@dataclass(frozen=True)
class DeadLetter:
    """A failed delivery's `notification.failed` event, waiting to be copied to the dead-letter topic."""

    delivery_id: str
    ticket_id: str
    value: str
    error: str
    attempts: int


def _to_document(delivery: Delivery) -> dict:
    document = delivery.model_dump(mode="json", exclude={"id", *_INSTANTS})
    for field, stored in _INSTANTS.items():
        instant = getattr(delivery, field)
        document[stored] = to_ms(instant) if instant is not None else None
    document.update(_id=delivery.id, claimed_until_ms=0)
    return document


def _from_document(document: dict) -> Delivery:
    instants = {field: from_ms(document[stored]) if document.get(stored) is not None else None for field, stored in _INSTANTS.items()}
    return Delivery.model_validate({**document, **instants, "id": document["_id"]})


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._deliveries = db["deliveries"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._deliveries.create_index([("state", ASCENDING), ("next_attempt_ms", ASCENDING)])
        await self._deliveries.create_index([("ticket_id", ASCENDING), ("created_ms", ASCENDING)])
        await self._deliveries.create_index([("recipient", ASCENDING), ("created_ms", ASCENDING)])
        await self._deliveries.create_index([("dead_letter.published", ASCENDING)], sparse=True)

    async def add_if_absent(self, delivery: Delivery) -> bool:
        """An upsert rather than an insert: a duplicate key would abort the caller's whole transaction."""
        document = _to_document(delivery)
        del document["_id"]
        added = await self._deliveries.update_one(
            {"_id": delivery.id}, {"$setOnInsert": document}, upsert=True, session=self._session
        )
        return added.upserted_id is not None

    async def get(self, delivery_id: str) -> Delivery | None:
        document = await self._deliveries.find_one({"_id": delivery_id}, session=self._session)
        return _from_document(document) if document else None

    async def replace_pending(self, delivery: Delivery) -> bool:
        """Rewrite a delivery nobody has tried to send yet (a digest gaining an item, a held one released)."""
        document = _to_document(delivery)
        del document["_id"]
        replaced = await self._deliveries.update_one(
            {"_id": delivery.id, "state": DeliveryState.PENDING.value, "attempts": 0},
            {"$set": document},
            session=self._session,
        )
        return replaced.modified_count == 1

    async def count_recent(self, recipient: str, since_ms: int) -> int:
        """Messages owed to `recipient` since then that count towards the rate limit (digests do not).

        Read from the (recipient, created) index: `count_documents` would load every delivery on the
        embedded server (see `shared.mongo_filters`)."""
        recent = await self._deliveries.find(
            {
                **eq(recipient=recipient),
                "created_ms": {"$gte": since_ms},
                "state": {"$in": [DeliveryState.PENDING.value, DeliveryState.SENT.value]},
                "kind": {"$ne": "digest"},
            },
            {"_id": 1},
            session=self._session,
        ).to_list()
        return len(recent)

    async def awaiting(self, ticket_id: str, awaiting: str) -> list[Delivery]:
        documents = await self._deliveries.find(
            eq(ticket_id=ticket_id, awaiting=awaiting, state=DeliveryState.PENDING.value, attempts=0),
            session=self._session,
        ).to_list()
        return [_from_document(document) for document in documents]

    async def pending_of_kinds(self, ticket_id: str, kinds: list[str]) -> list[Delivery]:
        documents = await self._deliveries.find(
            {**eq(ticket_id=ticket_id, state=DeliveryState.PENDING.value, attempts=0), "kind": {"$in": kinds}},
            session=self._session,
        ).to_list()
        return [_from_document(document) for document in documents]

    async def suppress(self, delivery: Delivery, reason: str) -> bool:
        updated = await self._deliveries.update_one(
            {"_id": delivery.id, "state": DeliveryState.PENDING.value, "attempts": 0},
            {"$set": {"state": DeliveryState.SUPPRESSED.value, "reason": reason}},
            session=self._session,
        )
        return updated.modified_count == 1

    async def claim_due(self, now_ms: int, claim_until_ms: int) -> Delivery | None:
        """The most overdue pending delivery nobody holds, now held until `claim_until_ms`; counts the attempt."""
        claimed = await self._deliveries.find_one_and_update(
            {
                **eq(state=DeliveryState.PENDING.value),
                "next_attempt_ms": {"$lte": now_ms},
                "claimed_until_ms": {"$lte": now_ms},
            },
            {"$set": {"claimed_until_ms": claim_until_ms}, "$inc": {"attempts": 1}},
            sort=[("next_attempt_ms", ASCENDING)],
            return_document=ReturnDocument.AFTER,
            session=self._session,
        )
        return _from_document(claimed) if claimed else None

    async def mark_sent(self, delivery: Delivery) -> bool:
        """False when another replica recorded it first (its claim had expired and both sent)."""
        marked = await self._deliveries.update_one(
            {"_id": delivery.id, "state": DeliveryState.PENDING.value},
            {"$set": {"state": DeliveryState.SENT.value, "sent_ms": to_ms(delivery.sent_at), "claimed_until_ms": 0}},
            session=self._session,
        )
        return marked.modified_count == 1

    async def record_failure(self, delivery: Delivery, dead_letter: str | None = None) -> bool:
        """Only for the latest claim: a later attempt by another replica has the final word.

        A delivery that failed for good keeps its `notification.failed` event (`dead_letter`) in the same
        update, so it always reaches the DLQ."""
        fields = {
            "state": delivery.state.value,
            "next_attempt_ms": to_ms(delivery.next_attempt_at),
            "last_error": delivery.last_error,
            "claimed_until_ms": 0,
        }
        if dead_letter is not None:
            fields["dead_letter"] = {"value": dead_letter, "published": False}
        recorded = await self._deliveries.update_one(
            {"_id": delivery.id, "state": DeliveryState.PENDING.value, "attempts": delivery.attempts},
            {"$set": fields},
            session=self._session,
        )
        return recorded.modified_count == 1

    async def has_unpublished_dead_letters(self) -> bool:
        return await self._deliveries.find_one(eq({"dead_letter.published": False}), {"_id": 1}, session=self._session) is not None

    async def unpublished_dead_letters(self, limit: int) -> list[DeadLetter]:
        documents = await self._deliveries.find(eq({"dead_letter.published": False}), session=self._session).limit(limit).to_list()
        return [
            DeadLetter(
                delivery_id=document["_id"],
                ticket_id=document["ticket_id"],
                value=document["dead_letter"]["value"],
                error=document.get("last_error") or "",
                attempts=document.get("attempts", 0),
            )
            for document in documents
        ]

    async def dead_letter_published(self, delivery_id: str) -> None:
        await self._deliveries.update_one(
            {"_id": delivery_id},
            {"$set": {"dead_letter.published": True, "dead_letter.published_ms": now_ms()}},
            session=self._session,
        )

    async def for_ticket(self, ticket_id: str) -> list[Delivery]:
        documents = await (
            self._deliveries.find(eq(ticket_id=ticket_id), session=self._session)
            .sort([("created_ms", ASCENDING), ("_id", ASCENDING)])
            .to_list()
        )
        return [_from_document(document) for document in documents]


class TicketViews:
    """Notify's own view of tickets, built from the events it consumes (it never reads intake's database)."""

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._tickets = db["tickets"]
        self._session = session

    async def get(self, ticket_id: str) -> TicketView | None:
        document = await self._tickets.find_one({"_id": ticket_id}, session=self._session)
        if document is None:
            return None
        return TicketView.model_validate({**document, "ticket_id": document["_id"]})

    async def update(self, ticket_id: str, fields: dict) -> None:
        """Upsert: events from different topics may arrive in any order (an SLA clock before the ticket)."""
        await self._tickets.update_one(
            {"_id": ticket_id},
            {"$set": {**fields, "updated_ms": now_ms()}},
            upsert=True,
            session=self._session,
        )


class Contacts:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._contacts = db["agent_contacts"]
        self._session = session

    async def get(self, agent_id: str) -> AgentContact | None:
        document = await self._contacts.find_one({"_id": agent_id}, session=self._session)
        if document is None:
            return None
        document.pop("_id")
        return AgentContact.model_validate(document)

    async def put(self, agent_id: str, contact: AgentContact) -> None:
        # $set of every field rather than replace_one: the embedded server's replace-upsert drops the _id.
        await self._contacts.update_one(
            {"_id": agent_id}, {"$set": contact.model_dump(mode="json")}, upsert=True, session=self._session
        )


class PreferenceStore:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._preferences = db["preferences"]
        self._session = session

    async def get(self, customer_id: str | None) -> Preferences | None:
        if not customer_id:
            return None
        document = await self._preferences.find_one({"_id": customer_id}, session=self._session)
        if document is None:
            return None
        document.pop("_id")
        return Preferences.model_validate(document)

    async def put(self, customer_id: str, preferences: Preferences) -> None:
        await self._preferences.update_one(
            {"_id": customer_id}, {"$set": preferences.model_dump(mode="json")}, upsert=True, session=self._session
        )

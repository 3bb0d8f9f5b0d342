"""MongoDB adapter for notify: the deliveries collection.

A delivery's `_id` is its deduplication key, so the primary key itself makes each (cause, recipient,
kind) deliver once. `claimed_until_ms` is the lease of the replica sending it: while it runs, no
other replica claims the delivery; if that replica dies, the delivery becomes claimable again.
"""

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.notify.domain import Delivery, DeliveryState
from shared.clock import from_ms, to_ms

_INSTANTS = {"next_attempt_at": "next_attempt_ms", "created_at": "created_ms", "sent_at": "sent_ms"}


def _to_document(delivery: Delivery) -> dict:
    document = delivery.model_dump(mode="json", exclude={"id", *_INSTANTS})
    for field, stored in _INSTANTS.items():
        instant = getattr(delivery, field)
        document[stored] = to_ms(instant) if instant is not None else None
    document.update(_id=delivery.id, claimed_until_ms=0)
    return document


def _from_document(document: dict) -> Delivery:
    instants = {field: from_ms(document[stored]) if document[stored] is not None else None for field, stored in _INSTANTS.items()}
    return Delivery.model_validate({**document, **instants, "id": document["_id"]})


class DeliveryRepository:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._deliveries = db["deliveries"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._deliveries.create_index([("state", ASCENDING), ("next_attempt_ms", ASCENDING)])
        await self._deliveries.create_index([("ticket_id", ASCENDING), ("created_ms", ASCENDING)])

    async def add_if_absent(self, delivery: Delivery) -> bool:
        """An upsert rather than an insert: a duplicate key would abort the caller's whole transaction."""
        document = _to_document(delivery)
        del document["_id"]
        added = await self._deliveries.update_one(
            {"_id": delivery.id}, {"$setOnInsert": document}, upsert=True, session=self._session
        )
        return added.upserted_id is not None

    async def claim_due(self, now_ms: int, claim_until_ms: int) -> Delivery | None:
        """The most overdue pending delivery nobody holds, now held until `claim_until_ms`; counts the attempt."""
        claimed = await self._deliveries.find_one_and_update(
            {
                "state": DeliveryState.PENDING.value,
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

    async def record_failure(self, delivery: Delivery) -> bool:
        """Only for the latest claim: a later attempt by another replica has the final word."""
        recorded = await self._deliveries.update_one(
            {"_id": delivery.id, "state": DeliveryState.PENDING.value, "attempts": delivery.attempts},
            {
                "$set": {
                    "state": delivery.state.value,
                    "next_attempt_ms": to_ms(delivery.next_attempt_at),
                    "last_error": delivery.last_error,
                    "claimed_until_ms": 0,
                }
            },
            session=self._session,
        )
        return recorded.modified_count == 1

    async def for_ticket(self, ticket_id: str) -> list[Delivery]:
        documents = await (
            self._deliveries.find({"ticket_id": ticket_id}, session=self._session)
            .sort([("created_ms", ASCENDING), ("_id", ASCENDING)])
            .to_list()
        )
        return [_from_document(document) for document in documents]

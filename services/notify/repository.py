"""MongoDB adapters for notify: deliveries, its view of tickets, agents' contacts, customers' preferences.

A delivery's `_id` is its deduplication key, so the primary key itself makes each (cause, recipient,
kind) deliver once, and its state is written in the same transaction as the consumer's inbox.
`claimed_until_ms` is the lease of the replica sending it: while it runs, no other replica claims
the delivery; if that replica dies, the delivery becomes claimable again. `claim_id` names that
claim, so a replica claiming a batch tells which of it are its own. `claimed_by` names the replica,
so one that restarts takes back at once what it held when it died, instead of waiting for the lease.

The consumer's adapters (`OwedDeliveries`, `TicketViews`, and `Contacts` and `PreferenceStore` within
a transaction) read through the transaction's cache and queue their writes, so a batch of events
costs one round trip per collection rather than several per event.
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from pymongo import ASCENDING, UpdateOne

from services.notify.domain import DIGEST_KIND, Delivery, DeliveryState
from services.notify.planner import AgentContact, Preferences, TicketView
from shared.clock import from_ms, now_ms, to_ms
from shared.mongo import KnownDocuments, Transaction
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


def _due(now_ms: int) -> dict:
    """Pending deliveries whose time has come and that no replica holds."""
    return {
        **eq(state=DeliveryState.PENDING.value),
        "next_attempt_ms": {"$lte": now_ms},
        "claimed_until_ms": {"$lte": now_ms},
    }


class DeliveryRepository:
    """Deliveries as the sender claims them, the dead-letter relay publishes them and the API reads them:
    one command each."""

    def __init__(self, tx: Transaction) -> None:
        self._deliveries = tx.db["deliveries"]
        self._session = tx.session

    async def ensure_indexes(self) -> None:
        await self._deliveries.create_index([("state", ASCENDING), ("next_attempt_ms", ASCENDING)])
        await self._deliveries.create_index([("ticket_id", ASCENDING), ("created_ms", ASCENDING)])
        await self._deliveries.create_index([("recipient", ASCENDING), ("created_ms", ASCENDING)])
        await self._deliveries.create_index([("dead_letter.published", ASCENDING)], sparse=True)
        await self._deliveries.create_index([("claimed_by", ASCENDING)], sparse=True)

    async def any_due(self, now_ms: int) -> bool:
        return await self._deliveries.find_one(_due(now_ms), {"_id": 1}, session=self._session) is not None

    async def claim_due(self, now_ms: int, claim_until_ms: int, limit: int, *, replica: str) -> list[Delivery]:
        """Up to `limit` of the most overdue pending deliveries nobody holds, now held until `claim_until_ms`,
        each attempt counted.

        The update is conditional on each candidate still being due and unclaimed, so when another replica
        claimed some of them first, only those marked with this claim's id are ours."""
        due = _due(now_ms)
        candidates = await (
            self._deliveries.find(due, session=self._session).sort([("next_attempt_ms", ASCENDING)]).limit(limit).to_list()
        )
        if not candidates:
            return []
        ids = [document["_id"] for document in candidates]
        claim_id = uuid.uuid4().hex
        claimed = await self._deliveries.update_many(
            {"_id": {"$in": ids}, **due},
            {"$set": {"claimed_until_ms": claim_until_ms, "claim_id": claim_id, "claimed_by": replica}, "$inc": {"attempts": 1}},
            session=self._session,
        )
        if claimed.modified_count < len(ids):
            candidates = await self._deliveries.find(
                {"_id": {"$in": ids}, **eq(claim_id=claim_id)}, session=self._session
            ).sort([("next_attempt_ms", ASCENDING)]).to_list()
            return [_from_document(document) for document in candidates]
        return [_from_document({**document, "attempts": document["attempts"] + 1}) for document in candidates]

    async def release_claims_of(self, replica: str) -> int:
        """Makes what `replica` holds claimable now: called by that replica as it starts, so what its
        previous process claimed and never recorded is sent again (with the same Message-ID)."""
        released = await self._deliveries.update_many(
            {**eq(claimed_by=replica, state=DeliveryState.PENDING.value), "claimed_until_ms": {"$gt": 0}},
            {"$set": {"claimed_until_ms": 0}},
            session=self._session,
        )
        return released.modified_count

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


UNTOUCHED = {"state": DeliveryState.PENDING.value, "attempts": 0}
"""Pending and never tried: the only deliveries a consumer may still rewrite or cancel."""


def _stored_with(document: dict | None, expected: Mapping[str, object]) -> bool:
    return document is not None and all(document.get(name) == value for name, value in expected.items())


def _untouched(document: dict | None) -> bool:
    return _stored_with(document, UNTOUCHED)


class OwedDeliveries:
    """Deliveries read and written through the transaction's cache: as the consumer decides them, and as
    the sender records what its sends came to.

    The prefetch learns with one `$in` query which of the deliveries a batch may owe exist already
    (`load`), so adding one is a queued write: its `_id` stays the deduplication key. Likewise the
    sender's records of a group commit read their deliveries in one query, check each is still theirs,
    and go out as one write, each update still conditional on what was read.
    """

    def __init__(self, tx: Transaction) -> None:
        self._deliveries = KnownDocuments(tx.db["deliveries"], tx)

    async def load(self, delivery_ids: Iterable[str]) -> None:
        await self._deliveries.load(delivery_ids)

    async def get(self, delivery_id: str) -> Delivery | None:
        document = await self._deliveries.get(delivery_id)
        return _from_document(document) if document else None

    async def add_if_absent(self, delivery: Delivery) -> bool:
        if await self._deliveries.get(delivery.id) is not None:
            return False
        self._deliveries.insert_later(_to_document(delivery))
        return True

    async def replace_pending(self, delivery: Delivery) -> bool:
        """Rewrite a delivery nobody has tried to send yet (a digest gaining an item, a held one released)."""
        fields = {name: value for name, value in _to_document(delivery).items() if name != "_id"}
        return await self._set_if(delivery.id, UNTOUCHED, fields, whole=True)

    async def suppress(self, delivery: Delivery, reason: str) -> bool:
        fields = {"state": DeliveryState.SUPPRESSED.value, "reason": reason}
        return await self._set_if(delivery.id, UNTOUCHED, fields, whole=True)

    async def mark_sent(self, delivery: Delivery) -> bool:
        """False when another replica recorded it first (its claim had expired and both sent)."""
        fields = {"state": DeliveryState.SENT.value, "sent_ms": to_ms(delivery.sent_at), "claimed_until_ms": 0}
        return await self._set_if(delivery.id, {"state": DeliveryState.PENDING.value}, fields)

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
        latest = {"state": DeliveryState.PENDING.value, "attempts": delivery.attempts}
        return await self._set_if(delivery.id, latest, fields)

    async def _set_if(self, delivery_id: str, expected: Mapping[str, object], fields: dict, *, whole: bool = False) -> bool:
        """Queues a write of `fields` if the delivery, as this transaction sees it, has the `expected` values;
        the write is conditional on them too. False, and nothing queued, if it does not.

        The consumer's writes replace the `whole` document: that costs the embedded server a third less than
        a `$set`, and folds into the insert of a delivery planned earlier in the same batch. The sender's
        records `$set` only their fields: they share their transaction with a claim, which writes
        deliveries past this cache."""
        current = await self._deliveries.get(delivery_id)
        if not _stored_with(current, expected):
            return False
        if whole:
            self._deliveries.replace_later({**current, **fields}, condition=eq(expected))
        else:
            self._deliveries.write_later(
                {**current, **fields}, UpdateOne({"_id": delivery_id, **eq(expected)}, {"$set": fields})
            )
        return True

    async def count_recent(self, recipient: str, since_ms: int) -> int:
        """Messages owed to `recipient` since then that count towards the rate limit (digests do not).

        Read from the (recipient, created) index: `count_documents` would load every delivery on the
        embedded server (see `shared.mongo_filters`)."""
        counted = [DeliveryState.PENDING.value, DeliveryState.SENT.value]
        recent = await self._deliveries.find(
            {
                **eq(recipient=recipient),
                "created_ms": {"$gte": since_ms},
                "state": {"$in": counted},
                "kind": {"$ne": DIGEST_KIND},
            },
            lambda document: document["recipient"] == recipient
            and document["created_ms"] >= since_ms
            and document["state"] in counted
            and document["kind"] != DIGEST_KIND,
        )
        return len(recent)

    async def held(self, delivery_ids: Iterable[str]) -> list[Delivery]:
        """Those of `delivery_ids` (a ticket's `held`) still held for an SLA clock, read by `_id` through the cache."""
        delivery_ids = list(delivery_ids)
        await self._deliveries.load(delivery_ids)
        documents = [await self._deliveries.get(delivery_id) for delivery_id in delivery_ids]
        return [_from_document(document) for document in documents if _untouched(document) and document.get("awaiting")]

    async def pending_of_kinds(self, ticket_id: str, kinds: list[str]) -> list[Delivery]:
        documents = await self._deliveries.find(
            {**eq({"ticket_id": ticket_id, **UNTOUCHED}), "kind": {"$in": kinds}},
            lambda document: _untouched(document) and document["ticket_id"] == ticket_id and document["kind"] in kinds,
        )
        return [_from_document(document) for document in documents]


class CustomerLimits:
    """Which delivery holds each customer's period of a once-per-customer kind (`_id` `<kind>:<customer>`),
    and until when (`until_ms`, the period after its due time).

    Read by `_id` through the transaction's cache (a batch's prefetch loads them with one `$in`), and
    taken with a conditional upsert matching only a period that ends by the new delivery's due time:
    when another replica took it meanwhile, the upsert collides with its `_id` and fails the batch,
    which the consumer retries and which then sees that period taken. So the limit holds across
    replicas and restarts, at no cost of a scan.
    """

    def __init__(self, tx: Transaction) -> None:
        self._limits = KnownDocuments(tx.db["customer_limits"], tx)

    async def load(self, keys: Iterable[str]) -> None:
        await self._limits.load(keys)

    async def take(self, key: str, delivery_id: str, *, due_ms: int, until_ms: int) -> bool:
        """False when another delivery holds a period that `due_ms` falls in; queued otherwise."""
        current = await self._limits.get(key)
        if current is not None and current["delivery_id"] == delivery_id:
            return True  # planned again (a redelivered event): the period is already this delivery's
        if current is not None and current["until_ms"] > due_ms:
            return False
        fields = {"delivery_id": delivery_id, "until_ms": until_ms, "taken_ms": now_ms()}
        self._limits.write_later(
            {"_id": key, **fields},
            UpdateOne({"_id": key, "until_ms": {"$lte": due_ms}}, {"$set": fields}, upsert=True),
        )
        return True

    async def release(self, key: str, delivery_id: str) -> None:
        """The delivery holding the period was cancelled before it went: the next one may take it."""
        current = await self._limits.get(key)
        if current is None or current["delivery_id"] != delivery_id:
            return
        self._limits.write_later(
            {**current, "until_ms": 0},
            UpdateOne({"_id": key, **eq(delivery_id=delivery_id)}, {"$set": {"until_ms": 0}}),
        )


class TicketViews:
    """Notify's own view of tickets, built from the events it consumes (it never reads intake's database)."""

    def __init__(self, tx: Transaction) -> None:
        self._tickets = KnownDocuments(tx.db["tickets"], tx)

    async def load(self, ticket_ids: Iterable[str]) -> None:
        await self._tickets.load(ticket_ids)

    async def get(self, ticket_id: str) -> TicketView | None:
        document = await self._tickets.get(ticket_id)
        if document is None:
            return None
        return TicketView.model_validate({**document, "ticket_id": document["_id"]})

    async def update(self, ticket_id: str, fields: dict) -> None:
        """Upsert: events from different topics may arrive in any order (an SLA clock before the ticket)."""
        fields = {**fields, "updated_ms": now_ms()}
        current = await self._tickets.get(ticket_id) or {"_id": ticket_id}
        self._tickets.replace_later({**current, **fields})


class Contacts:
    """Agents' contacts: the API writes them; a consumer's transaction reads them through its cache."""

    def __init__(self, tx: Transaction) -> None:
        self._contacts = tx.db["agent_contacts"]
        self._known = KnownDocuments(self._contacts, tx)

    async def load(self, agent_ids: Iterable[str]) -> None:
        await self._known.load(agent_ids)

    async def get(self, agent_id: str) -> AgentContact | None:
        document = await self._known.get(agent_id)
        if document is None:
            return None
        return AgentContact.model_validate({name: value for name, value in document.items() if name != "_id"})

    async def put(self, agent_id: str, contact: AgentContact) -> None:
        # $set of every field rather than replace_one: the embedded server's replace-upsert drops the _id.
        await self._contacts.update_one({"_id": agent_id}, {"$set": contact.model_dump(mode="json")}, upsert=True)


class PreferenceStore:
    """Customers' preferences: the API writes them; a consumer's transaction reads them through its cache."""

    def __init__(self, tx: Transaction) -> None:
        self._preferences = tx.db["preferences"]
        self._known = KnownDocuments(self._preferences, tx)

    async def load(self, customer_ids: Iterable[str]) -> None:
        await self._known.load(customer_ids)

    async def get(self, customer_id: str | None) -> Preferences | None:
        if not customer_id:
            return None
        document = await self._known.get(customer_id)
        if document is None:
            return None
        return Preferences.model_validate({name: value for name, value in document.items() if name != "_id"})

    async def put(self, customer_id: str, preferences: Preferences) -> None:
        await self._preferences.update_one({"_id": customer_id}, {"$set": preferences.model_dump(mode="json")}, upsert=True)


class NotifyTransaction(Transaction):
    """A transaction of notify's, carrying its repositories (each built once, on first use): `deliveries` as
    the sender claims them and the API reads them, one command each; `owed`, the same deliveries through
    the transaction's cache, as the consumer decides them and the sender records their outcomes."""

    @cached_property
    def deliveries(self) -> DeliveryRepository:
        return DeliveryRepository(self)

    @cached_property
    def owed(self) -> OwedDeliveries:
        return OwedDeliveries(self)

    @cached_property
    def tickets(self) -> TicketViews:
        return TicketViews(self)

    @cached_property
    def customer_limits(self) -> CustomerLimits:
        return CustomerLimits(self)

    @cached_property
    def contacts(self) -> Contacts:
        return Contacts(self)

    @cached_property
    def preferences(self) -> PreferenceStore:
        return PreferenceStore(self)

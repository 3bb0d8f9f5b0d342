"""MongoDB plumbing every service shares: the unit of work and leases.

A use case runs inside `UnitOfWork.run`: its state changes and the events it publishes are
committed in one transaction (the transactional outbox), so there are never dual writes.

Two accommodations for the embedded Mongo-wire server (nx-27017), both made only when
`transaction_lock` is given, which the launcher does for that server alone
(`MONGODB_TRANSACTION_LOCK_DIR`); against MongoDB a transaction is just a transaction:
- It opens a transaction only when the transaction's first command is a write, so every
  transaction starts with a write that matches nothing.
- It runs concurrent transactions as nested SAVEPOINTs on one SQLite connection, so one
  session's abort also rolls back another's commit, and a client killed mid-transaction leaves
  its transaction open for good, swallowing every later one. When `transaction_lock` is given
  (the launcher asks for one file per database beside the embedded server's data),
  transactions of every process on that database take it in turn, which makes them atomic
  and isolated again, and the lock ends a dead holder's orphaned transaction (see
  `TransactionLock`). Reads outside a
  transaction (the APIs' GETs) may still see a transaction in flight there, but for those made
  holding the lock (`UnitOfWork.read_committed`).
"""

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from bson import Binary
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.operations import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.clock import now_ms
from shared.envelope import Envelope

T = TypeVar("T")


WriteModel = InsertOne | UpdateOne | UpdateMany | ReplaceOne | DeleteOne
COMBINABLE = frozenset({"$set", "$inc", "$setOnInsert"})


def combined_update(earlier: dict, later: dict) -> dict | None:
    """One update with the effect of `earlier` then `later`, both of the same `_id`; None when they do not
    make one (an operator other than `$set`, `$inc` and `$setOnInsert`, or two paths that overlap under
    different operators, or one inside the other).

    `later`'s `$setOnInsert` does nothing (as an upsert, `earlier` leaves the document existing; if it
    is not one, neither is `later`, see `_Update.absorb`); its `$set` overrides, and its `$inc` adds to,
    what `earlier` wrote to the same path."""
    if not (earlier.keys() | later.keys()) <= COMBINABLE:
        return None
    for operator, fields in later.items():
        if operator == "$setOnInsert":
            continue
        for path in fields:
            for earlier_operator, earlier_fields in earlier.items():
                for earlier_path in earlier_fields:
                    same = path == earlier_path and (
                        earlier_operator == operator or (earlier_operator, operator) == ("$setOnInsert", "$set")
                    )
                    if not same and _overlap(path, earlier_path):
                        return None
    combined = {operator: dict(fields) for operator, fields in earlier.items()}
    for path, value in later.get("$set", {}).items():
        combined.setdefault("$set", {})[path] = value
        combined.get("$setOnInsert", {}).pop(path, None)
    for path, value in later.get("$inc", {}).items():
        increments = combined.setdefault("$inc", {})
        increments[path] = increments.get(path, 0) + value
    return {operator: fields for operator, fields in combined.items() if fields}


def _overlap(path: str, other: str) -> bool:
    return path == other or path.startswith(other + ".") or other.startswith(path + ".")


@dataclass
class _Update:
    """A queued write of one `_id` that later ones of it in the same transaction fold into."""

    document_id: object
    update: dict | None = None
    upsert: bool = False
    replacement: dict | None = None
    """Set for a replace or an insert, instead of `update`."""
    condition: dict | None = None
    """The filter beside the `_id`: a replace or an update writes only a stored document that matches (a
    replace with none is an upsert; a conditional upsert that matches nothing collides with the `_id`)."""
    insert: bool = False
    """`replacement` is new in this transaction: written with an insert."""

    def absorb(self, update: dict, upsert: bool, condition: dict | None) -> bool:
        """Fold `update` in, if the two make one write. An upsert after an update that is not one may
        insert what that update would not have written, so it never folds into one. A conditional update
        folds into a conditional one only if its condition is what that one leaves (a version it
        incremented): that one's condition then guards both."""
        if self.update is None or (upsert and not self.upsert) or (condition is None) != (self.condition is None):
            return False
        if condition is not None and condition != self._leaves(condition):
            return False
        combined = combined_update(self.update, update)
        if combined is not None:
            self.update = combined
        return combined is not None

    def _leaves(self, condition: dict) -> dict | None:
        """The values of `condition`'s fields once this update is applied to a document matching its own."""
        left = {}
        for field in condition:
            if field not in self.condition or isinstance(self.condition[field], dict):
                return None  # not a plain value this update's own condition fixes
            value = self.condition[field]
            if field in self.update.get("$set", {}):
                value = self.update["$set"][field]
            elif field in self.update.get("$inc", {}):
                value += self.update["$inc"][field]
            left[field] = value
        return left

    def replace(self, document: dict, condition: dict | None) -> bool:
        """Make this write leave `document` stored, if it can: an insert or a replace writes it instead (the
        caller checked `condition` against what this write leaves, so this write's own condition stays);
        an update becomes an upsert of it, unless the replace or the update has a condition, which only the
        stored document can be asked."""
        if self.update is not None and (condition is not None or self.condition is not None):
            return False
        self.update, self.replacement = None, document
        return True

    def operation(self) -> WriteModel:
        if self.insert:
            return InsertOne(self.replacement)
        if self.replacement is not None:
            return ReplaceOne({"_id": self.document_id, **(self.condition or {})}, self.replacement,
                              upsert=self.condition is None)
        return UpdateOne({"_id": self.document_id, **(self.condition or {})}, self.update, upsert=self.upsert)


class Transaction:
    """The session a use case writes through, the events it asks to publish on commit, and what
    it does outside the database once committed.

    Two helpers keep round trips per transaction, not per event, for a consumer batch:
    - `write_later` queues a write whose result the use case does not need; all queued writes go
      out as one ordered bulk write per collection, before the outbox, when the work is done, or
      earlier at `flush`. A use case that reads a collection it queued writes to calls `flush` first.
      `update_later`, `replace_later` and `insert_later` queue a write by `_id` that later ones of
      the same document fold into, if they combine: a batch's events often touch the same document,
      and each write costs the embedded server far more than the merging costs here.
    - `cache` is a plain dict that lives as long as the transaction: a batch's prefetch fills it
      (one query per collection), and the repositories that read through it keep it up to date
      when they write.

    Each service subclasses it to carry its repositories (`tx.tickets`, `tx.agents`…), built once per
    transaction, so use cases never see the database or the session and can be run on a fake.
    Without a session (`UnitOfWork.reads`), it serves the APIs' reads outside any transaction.
    """

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None) -> None:
        self.db = db
        self.session = session
        self.events: list[tuple[str, Envelope]] = []
        self.committed: list[Callable[[], None]] = []
        self.cache: dict = {}
        self._queued: dict[str, list[WriteModel | _Update]] = {}
        self._foldable: dict[str, dict[object, _Update]] = {}
        """By collection and `_id`: the queued writes that a later one may fold into, none queued after
        them by `write_later` (which it would otherwise overtake)."""

    def write_later(self, collection: str, *operations: WriteModel) -> None:
        self._queued.setdefault(collection, []).extend(operations)
        self._foldable.pop(collection, None)

    def update_later(
        self, collection: str, document_id: object, update: dict, *, upsert: bool, condition: dict | None = None
    ) -> None:
        """Queue `UpdateOne({"_id": document_id, **condition}, update, upsert=upsert)`, folded into the write
        queued for that document if the two combine (`combined_update`, `_Update.absorb`)."""
        queued = self._foldable.get(collection, {}).get(document_id)
        if queued is None or not queued.absorb(update, upsert, condition):
            self._queue_foldable(collection, _Update(document_id, update=update, upsert=upsert, condition=condition))

    def replace_later(self, collection: str, document: dict, *, condition: dict | None = None) -> None:
        """Queue `ReplaceOne({"_id": ..., **condition}, document)`, an upsert when there is no `condition`.

        It takes the place of the write queued for that document by `update_later`, `replace_later` or
        `insert_later` (it overwrites what that one wrote), except a conditional replace after an update:
        that goes out after it. A replace costs the embedded server a third less than a `$set` of a few
        fields of the same document, so a use case that knows the whole document replaces it."""
        queued = self._foldable.get(collection, {}).get(document["_id"])
        if queued is None or not queued.replace(document, condition):
            self._queue_foldable(collection, _Update(document["_id"], replacement=document, condition=condition))

    def insert_later(self, collection: str, document: dict) -> None:
        """Queue `InsertOne(document)`, which later writes of that document in this transaction fold into: a
        document the use case read as absent in this transaction (another transaction writing it meanwhile
        is a conflict, and the transaction runs again)."""
        self._queue_foldable(collection, _Update(document["_id"], replacement=document, insert=True))

    def _queue_foldable(self, collection: str, write: _Update) -> None:
        self._queued.setdefault(collection, []).append(write)
        self._foldable.setdefault(collection, {})[write.document_id] = write

    async def flush(self) -> None:
        """Send the queued writes, in the order they were queued within each collection."""
        queued, self._queued, self._foldable = self._queued, {}, {}
        for collection, operations in queued.items():
            writes = [write.operation() if isinstance(write, _Update) else write for write in operations]
            await self.db[collection].bulk_write(writes, ordered=True, session=self.session)

    def publish(self, topic: str, event: Envelope) -> None:
        self.events.append((topic, event))

    def on_commit(self, effect: Callable[[], None]) -> None:
        """Run `effect` only if this transaction commits: a metric counted or an in-memory timer set
        by a transaction that aborts (and is retried) would otherwise count or fire twice."""
        self.committed.append(effect)


Work = Callable[[Transaction], Awaitable[T]]
Tx = TypeVar("Tx", bound=Transaction)


class KnownDocuments:
    """One collection's documents as a transaction has read or written them, by `_id`, kept in its
    `cache` (None for one known not to exist), so a repository reads each at most once per transaction.

    A batch's prefetch loads many with one `$in` query (`load`); a write that updates what is kept
    (`keep`, or `write_later` to also queue the operation) lets later reads be answered here, so they
    never need the queued writes sent first. Without a transaction (an API's read) nothing is kept:
    every read asks the database.
    """

    def __init__(self, collection: AsyncCollection, tx: Transaction | None) -> None:
        self._collection = collection
        self._tx = tx
        self._documents: dict[str, dict | None] | None = (
            tx.cache.setdefault(collection.name, {}) if tx is not None and tx.session is not None else None
        )

    async def load(self, ids: Iterable[str]) -> None:
        if self._documents is None:
            return
        wanted = [id_ for id_ in dict.fromkeys(ids) if id_ not in self._documents]
        if not wanted:
            return
        found = await self._collection.find({"_id": {"$in": wanted}}, session=self._tx.session).to_list()
        by_id = {document["_id"]: document for document in found}
        self._documents.update({id_: by_id.get(id_) for id_ in wanted})

    async def get(self, id_: str) -> dict | None:
        if self._documents is None:
            return await self._collection.find_one({"_id": id_})
        await self.load([id_])
        return self._documents[id_]

    def keep(self, document: dict) -> dict:
        """`document` as this transaction stores it (its write may still be queued)."""
        self._documents[document["_id"]] = document
        return document

    def write_later(self, document: dict, operation: WriteModel) -> None:
        """Queue `operation`, which leaves `document` stored."""
        self.keep(document)
        self._tx.write_later(self._collection.name, operation)

    def update_later(self, document: dict, update: dict, *, upsert: bool) -> None:
        """Queue `update` of `document["_id"]` (`Transaction.update_later`), which leaves `document` stored."""
        self.keep(document)
        self._tx.update_later(self._collection.name, document["_id"], update, upsert=upsert)

    def replace_later(self, document: dict, *, condition: dict | None = None) -> None:
        """Queue a replace with `document` (`Transaction.replace_later`)."""
        self.keep(document)
        self._tx.replace_later(self._collection.name, document, condition=condition)

    def insert_later(self, document: dict) -> None:
        """Queue an insert of `document`, which this transaction knows to be absent (`Transaction.insert_later`)."""
        self.keep(document)
        self._tx.insert_later(self._collection.name, document)

    def forget(self, id_: str) -> None:
        """Another version may be stored: the next read asks the database."""
        self._documents.pop(id_, None)

    async def find(self, query: dict, matches: Callable[[dict], bool]) -> list[dict]:
        """What `query` selects once the queued writes are applied: `matches` must say the same in Python,
        since documents written in this transaction are judged as kept, not as stored."""
        for document in await self._collection.find(query, session=self._tx.session).to_list():
            self._documents.setdefault(document["_id"], document)
        return [document for document in self._documents.values() if document is not None and matches(document)]


class TransactionLock:
    """A lock shared by every process on this machine: an asyncio lock in front of a file lock.

    While a transaction runs, the file names its session. A holder that finds a session named
    there knows the previous holder died mid-transaction, and ends that session, which makes
    the embedded server roll the orphaned transaction back before any other can nest in it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._in_process = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def held(self, client: AsyncMongoClient, session: AsyncClientSession | None) -> AsyncIterator[None]:
        """`session`: the one whose transaction runs while it is held; None for reads outside any."""
        async with self._in_process:
            with self._path.open("a+") as lock_file:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process holds it: wait in a thread, not in the event loop
                    await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
                try:
                    lock_file.seek(0)
                    orphan = lock_file.read().strip()
                    if orphan:
                        await client.admin.command("endSessions", [{"id": Binary(bytes.fromhex(orphan), 4)}])
                    _rewrite(lock_file, session.session_id["id"].hex() if session is not None else "")
                    yield
                finally:
                    _rewrite(lock_file, "")
                    fcntl.flock(lock_file, fcntl.LOCK_UN)


def _rewrite(lock_file, content: str) -> None:
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(content)
    lock_file.flush()  # the page cache outlives a killed process; no fsync needed


class UnitOfWork(Generic[Tx]):
    def __init__(
        self,
        client: AsyncMongoClient,
        db: AsyncDatabase,
        write_outbox: Callable[[Transaction], Awaitable[None]],
        transaction_lock: Path | None = None,
        transaction_type: type[Tx] = Transaction,
    ) -> None:
        self.client = client
        self.db = db
        self._write_outbox = write_outbox
        self._on_commit: list[Callable[[], None]] = []
        self._lock = TransactionLock(transaction_lock) if transaction_lock else None
        self._transaction_type = transaction_type

    @property
    def reads(self) -> Tx:
        """The repositories outside any transaction, for the APIs' reads."""
        return self._transaction_type(self.db, None)

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `work` in a transaction, retried by the driver on transient conflicts."""
        last: Transaction | None = None

        async def attempt(session: AsyncClientSession) -> T:
            nonlocal last
            last = transaction = self._transaction_type(self.db, session)
            if self._lock is not None:  # the embedded server: see the module's docstring
                await self.db["transactions"].update_one({"_id": None}, {"$set": {"opened": True}}, session=session)
            result = await work(transaction)
            await transaction.flush()
            await self._write_outbox(transaction)
            return result

        async with self.client.start_session() as session:
            if self._lock is None:
                result = await session.with_transaction(attempt)
            else:
                async with self._lock.held(self.client, session):
                    result = await session.with_transaction(attempt)
        # `with_transaction` may run `attempt` again after a transient error: only the attempt that
        # committed has effects.
        assert last is not None
        for effect in last.committed:
            effect()
        if last.events:
            for listener in self._on_commit:
                listener()
        return result

    async def read_committed(self, read: Callable[[], Awaitable[T]]) -> T:
        """Run `read` outside any transaction, seeing only what is committed: on MongoDB as it is (a read
        outside a transaction never sees an uncommitted write); on the embedded server while holding the
        transaction lock, so none is in flight. One command where a transaction would take three (the
        opening write, the read, the commit), and the lock for that long."""
        if self._lock is None:
            return await read()
        async with self._lock.held(self.client, None):
            return await read()

    def after_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each commit that stored events (the relay, to send them at once)."""
        self._on_commit.append(listener)


class Lease:
    """A named, expiring claim in MongoDB, so that one replica at a time does a singleton job.

    Holding it is checked and renewed with one conditional upsert; a replica that dies simply
    stops renewing and another takes over once the lease has expired, within a third of its term.
    A holder renews only once a third of the term has passed since its last renewal, not on every
    call: a job that asks every half second costs one transaction every few seconds, and still
    holds the lease with two thirds of its term to spare.
    """

    def __init__(self, uow: UnitOfWork, name: str, owner: str, ttl_seconds: float) -> None:
        self._uow = uow
        self.name = name
        self.owner = owner
        self._ttl_ms = int(ttl_seconds * 1000)
        self._ask_again_after_ms = 0
        self._held = False

    async def acquire(self) -> bool:
        if now_ms() < self._ask_again_after_ms:
            return self._held
        try:
            held = await self._uow.run(self._claim)
        except DuplicateKeyError:
            held = False  # another owner holds it: the upsert collided with their document
        # A holder renews a third of the way through its term; a replica that found it held asks again
        # as late, rather than at every call: a transaction per poll is what an idle standby would cost.
        self._ask_again_after_ms = now_ms() + self._ttl_ms // 3
        self._held = held
        return held

    async def _claim(self, tx: Transaction) -> bool:
        now = now_ms()
        held = await tx.db["leases"].find_one_and_update(
            {"_id": self.name, "$or": [{"owner": self.owner}, {"expires_ms": {"$lt": now}}]},
            {"$set": {"owner": self.owner, "expires_ms": now + self._ttl_ms}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=tx.session,
        )
        return held is not None and held["owner"] == self.owner

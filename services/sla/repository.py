"""MongoDB adapters for SLA: what it knows of tickets, and the clocks (one document per ticket and metric).

Every write is conditional on the version the writer read, so the consumer and the timers of
any number of replicas never overwrite each other's decisions: the loser sees `False` and
either retries (the consumer) or drops its stale timer (the scheduler). A clock's next firing
is `next_fire_ms`, indexed, and absent when none is due, so the scheduler reads the near
horizon with one range scan. A ticket's clocks are read by their ids (ticket and metric), which
every server finds by primary key (the embedded one scans for `ticket_id` `$in`; see
`shared.mongo_filters`). The number of live clocks is a counter kept by the same transactions
that start and fulfil clocks: counting a million documents would stall the embedded server. How far
the clocks are reconciled with the policy file in force is one more document beside that counter.

The consumer's handlers read a batch's tickets and clocks in one query each, and queue their writes,
which go out in one bulk write per collection when the batch is done.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

from pymongo import ASCENDING, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.sla.domain import Clock, Metric, TicketRecord, clock_id
from shared.events import TicketStatus
from shared.mongo import Transaction
from shared.mongo_filters import eq

LIVE_CLOCKS = "live_clocks"
POLICY_RELOAD = "policy_reload"


@dataclass(frozen=True)
class ReloadProgress:
    """How far the clocks are reconciled with the policies of `digest`; `after` is the last ticket id done."""

    digest: str
    after: str | None = None
    done: bool = False
    tickets: int = 0
    clocks: int = 0
    events: int = 0


def _clock_document(clock: Clock) -> dict:
    # Its fields' own values: `asdict` would copy each deeply, a fifth of sla's CPU under load.
    document = dict(vars(clock))
    document.update(
        _id=clock.id,
        metric=clock.metric.value,
        warnings=list(clock.warnings),
        fired=list(clock.fired),
        pause_on=sorted(clock.pause_on),
        state=clock.state.value,
    )
    if clock.next_fire_ms is None:
        del document["next_fire_ms"]  # out of the timer index entirely
    return document


def _clock(document: dict) -> Clock:
    return Clock(
        ticket_id=document["ticket_id"],
        metric=Metric(document["metric"]),
        cycle=document["cycle"],
        policy=document["policy"],
        priority=document["priority"],
        calendar=document["calendar"],
        target_ms=document["target_ms"],
        warnings=tuple(document["warnings"]),
        pause_on=frozenset(document["pause_on"]),
        started_ms=document["started_ms"],
        running=document["running"],
        stopped=document["stopped"],
        elapsed_ms=document["elapsed_ms"],
        since_ms=document.get("since_ms"),
        due_ms=document.get("due_ms"),
        fired=tuple(document.get("fired", ())),
        breached=document.get("breached", False),
        next_fire_ms=document.get("next_fire_ms"),
        paused_ms=document.get("paused_ms"),
        stopped_ms=document.get("stopped_ms"),
        version=document["version"],
    )


def _ticket_document(ticket: TicketRecord) -> dict:
    document = dict(vars(ticket))
    document.update(_id=ticket.ticket_id, tags=list(ticket.tags))
    return document


def _ticket(document: dict) -> TicketRecord:
    fields = {name: document.get(name) for name in TicketRecord.__dataclass_fields__}
    fields["tags"] = tuple(document.get("tags") or ())
    fields["status"] = TicketStatus(document["status"])
    fields["statuses"] = tuple((at, TicketStatus(status)) for at, status in document.get("statuses") or ())
    return TicketRecord(**fields)


@dataclass
class _Batch:
    """What a consumer batch knows of its tickets (None: not created) and their clocks, kept true by its
    writes, and the live-clocks increment the batch sends as one `$inc`."""

    tickets: dict[str, TicketRecord | None] = field(default_factory=dict)
    clocks: dict[str, dict[Metric, Clock]] = field(default_factory=dict)
    live: dict[str, int] | None = None


def _conditional(read_version: int, document: dict) -> ReplaceOne:
    """A queued write of the version read plus one, conditional on the version read: an upsert, so that a
    document created or changed meanwhile (a timer fired the clock) collides with it on `_id` (duplicate
    key), which fails the batch's transaction, and the consumer applies its events again one by one, each
    reading what is stored by then. New documents (version 0) are upserts too: a batch's writes to a
    collection are then all updates, one command, where inserts among them would split it in runs."""
    return ReplaceOne({"_id": document["_id"], "version": read_version}, document, upsert=True)


class SlaRepository:
    """SLA's tickets and clocks, for the consumer, the timers, the policy reload and the API.

    Within a transaction, a ticket and its clocks are read through the batch (`prefetch`: one query each
    for all of a consumer batch's tickets); outside one (the API) `clocks_of` asks the database.
    Two kinds of conditional write:
    - `save_ticket`, `save_clock`, `save_clocks`, `add_live` are sent at once and answer None when
      someone else was first (the timers and the policy reload, which then retry or drop their decision);
    - their `_later` twins, the consumer's, are queued with `Transaction.write_later` and never answer
      None: a lost race fails the whole transaction when the writes are sent (see `_conditional`).
    """

    def __init__(self, tx: Transaction) -> None:
        self._clocks = tx.db["clocks"]
        self._tickets = tx.db["tickets"]
        self._stats = tx.db["stats"]
        self._tx = tx
        self._session = tx.session
        self._batch: _Batch | None = tx.cache.setdefault("sla", _Batch()) if tx.session is not None else None

    async def ensure_indexes(self) -> None:
        await self._clocks.create_index([("next_fire_ms", ASCENDING)])
        await self._clocks.create_index([("stopped", ASCENDING)])

    async def seed_live_count(self) -> None:
        """Counts the live clocks once, for clocks stored before the counter existed (or by an older release)."""
        if await self._stats.find_one({"_id": LIVE_CLOCKS}) is None:
            try:
                await self._stats.insert_one({"_id": LIVE_CLOCKS, "n": await self._clocks.count_documents(eq(stopped=False))})
            except DuplicateKeyError:
                pass  # another replica seeded it first

    # --- tickets ------------------------------------------------------------------------------

    async def prefetch(self, ticket_ids: Iterable[str]) -> None:
        """Reads the tickets not read yet, and the clocks of those that exist, in one query each."""
        wanted = [ticket_id for ticket_id in dict.fromkeys(ticket_ids) if ticket_id not in self._batch.tickets]
        if not wanted:
            return
        documents = await self._tickets.find({"_id": {"$in": wanted}}, session=self._session).to_list()
        found = {document["_id"]: _ticket(document) for document in documents}
        clocks = await self.clocks_of_tickets(list(found))  # a ticket's clocks are stored with it, never before
        for ticket_id in wanted:
            self._batch.tickets[ticket_id] = found.get(ticket_id)
            self._batch.clocks[ticket_id] = clocks.get(ticket_id, {})

    async def ticket(self, ticket_id: str) -> TicketRecord | None:
        await self.prefetch([ticket_id])
        return self._batch.tickets[ticket_id]

    async def save_ticket(self, ticket: TicketRecord) -> TicketRecord | None:
        """Inserts a ticket never stored (version 0) or replaces the version read; None if someone was first."""
        stored = replace(ticket, version=ticket.version + 1)
        if ticket.version == 0:
            try:
                await self._tickets.insert_one(_ticket_document(stored), session=self._session)
            except DuplicateKeyError:
                return None
            return stored
        replaced = await self._tickets.find_one_and_replace(
            {"_id": ticket.ticket_id, "version": ticket.version},
            _ticket_document(stored),
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return stored if replaced is not None else None

    async def tickets_not_closed(self, after: str | None, limit: int) -> list[TicketRecord]:
        """The next `limit` tickets after `after` in id order that are not closed: the only ones a policy can
        still change (closing fulfils every clock, and nothing changes a closed ticket's clocks)."""
        query: dict = {"status": {"$ne": TicketStatus.CLOSED.value}}
        if after is not None:
            query["_id"] = {"$gt": after}
        documents = await self._tickets.find(query, session=self._session).sort("_id", ASCENDING).limit(limit).to_list()
        return [_ticket(document) for document in documents]

    # --- clocks -------------------------------------------------------------------------------

    async def clocks_of(self, ticket_id: str) -> dict[Metric, Clock]:
        if self._batch is None:
            return (await self.clocks_of_tickets([ticket_id])).get(ticket_id, {})
        await self.prefetch([ticket_id])
        return dict(self._batch.clocks[ticket_id])  # a copy: the caller compares it with what it saves

    async def clocks_of_tickets(self, ticket_ids: list[str]) -> dict[str, dict[Metric, Clock]]:
        if not ticket_ids:
            return {}
        ids = [clock_id(ticket_id, metric) for ticket_id in ticket_ids for metric in Metric]
        documents = await self._clocks.find({"_id": {"$in": ids}}, session=self._session).to_list()
        clocks: dict[str, dict[Metric, Clock]] = {}
        # Documents of the walking skeleton's first-reply clock (no `target_ms`) are left out.
        for clock in (_clock(document) for document in documents if "target_ms" in document):
            clocks.setdefault(clock.ticket_id, {})[clock.metric] = clock
        return clocks

    async def clock(self, clock_id: str) -> Clock | None:
        document = await self._clocks.find_one({"_id": clock_id}, session=self._session)
        return _clock(document) if document and "target_ms" in document else None

    async def save_clock(self, clock: Clock) -> Clock | None:
        """Like `save_ticket`: conditional on the version read, so a firing or a change happens once."""
        stored = replace(clock, version=clock.version + 1)
        if clock.version == 0:
            try:
                await self._clocks.insert_one(_clock_document(stored), session=self._session)
            except DuplicateKeyError:
                return None
            return stored
        replaced = await self._clocks.find_one_and_replace(
            {"_id": clock.id, "version": clock.version},
            _clock_document(stored),
            projection={"_id": 1},
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return stored if replaced is not None else None

    async def clocks_by_id(self, clock_ids: list[str]) -> dict[str, Clock]:
        documents = await self._clocks.find({"_id": {"$in": clock_ids}}, session=self._session).to_list()
        return {document["_id"]: _clock(document) for document in documents if "target_ms" in document}

    async def save_clocks(self, clocks: list[Clock]) -> list[Clock] | None:
        """Many conditional replacements in one round trip: the stored clocks, or None unless every one of
        them still had the version read (the caller's transaction must then be abandoned)."""
        if not clocks:
            return []
        stored = [replace(clock, version=clock.version + 1) for clock in clocks]
        result = await self._clocks.bulk_write(
            [
                ReplaceOne({"_id": clock.id, "version": clock.version}, _clock_document(new))
                for clock, new in zip(clocks, stored, strict=True)
            ],
            ordered=True,
            session=self._session,
        )
        return stored if result.matched_count == len(clocks) else None

    async def due_before(self, until_ms: int, limit: int) -> list[tuple[int, str, int]]:
        """(next_fire_ms, clock id, version) of the clocks due by `until_ms`, soonest first, overdue included."""
        documents = (
            await self._clocks.find(
                {"next_fire_ms": {"$lte": until_ms}},
                {"_id": 1, "next_fire_ms": 1, "version": 1},
                session=self._session,
            )
            .sort("next_fire_ms", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [(d["next_fire_ms"], d["_id"], d["version"]) for d in documents if d.get("next_fire_ms") is not None]

    async def add_live(self, delta: int) -> None:
        if delta:
            await self._stats.update_one({"_id": LIVE_CLOCKS}, {"$inc": {"n": delta}}, upsert=True, session=self._session)

    async def reload_progress(self) -> ReloadProgress | None:
        document = await self._stats.find_one({"_id": POLICY_RELOAD}, session=self._session)
        return ReloadProgress(**{name: document[name] for name in ReloadProgress.__dataclass_fields__}) if document else None

    async def begin_reload(self, digest: str) -> None:
        """Starts reconciling the clocks with the policies of `digest`, from the first ticket."""
        await self._stats.replace_one(
            {"_id": POLICY_RELOAD}, {"_id": POLICY_RELOAD, **asdict(ReloadProgress(digest))}, upsert=True, session=self._session
        )

    async def advance_reload(self, was: ReloadProgress, now: ReloadProgress) -> bool:
        """Records a batch done, conditional on the progress it started from: False if another replica moved it."""
        result = await self._stats.update_one(
            {"_id": POLICY_RELOAD, "digest": was.digest, "after": was.after}, {"$set": asdict(now)}, session=self._session
        )
        return result.matched_count == 1

    async def count_live(self) -> int:
        document = await self._stats.find_one({"_id": LIVE_CLOCKS}, session=self._session)
        return document["n"] if document else 0

    # --- the consumer's queued writes -----------------------------------------------------------

    def save_ticket_later(self, ticket: TicketRecord) -> TicketRecord:
        stored = replace(ticket, version=ticket.version + 1)
        self._tx.write_later(self._tickets.name, _conditional(ticket.version, _ticket_document(stored)))
        self._batch.tickets[ticket.ticket_id] = stored
        return stored

    def save_clock_later(self, clock: Clock) -> Clock:
        stored = replace(clock, version=clock.version + 1)
        self._tx.write_later(self._clocks.name, _conditional(clock.version, _clock_document(stored)))
        self._batch.clocks.setdefault(clock.ticket_id, {})[clock.metric] = stored
        return stored

    def add_live_later(self, delta: int) -> None:
        """Adds to the batch's one `$inc`, queued with the first change and counted until it is sent."""
        if not delta:
            return
        if self._batch.live is None:
            self._batch.live = {"n": 0}
            self._tx.write_later(self._stats.name, UpdateOne({"_id": LIVE_CLOCKS}, {"$inc": self._batch.live}, upsert=True))
        self._batch.live["n"] += delta


class SlaTransaction(Transaction):
    """A transaction of SLA's, carrying its repository (built once, on first use)."""

    @cached_property
    def clocks(self) -> SlaRepository:
        return SlaRepository(self)

"""MongoDB adapters for routing: agents, the tickets routing is responsible for, customers' last agents.

Capacity and assignment are claimed with conditional updates on the version the transaction read,
so two replicas can never overfill an agent or assign one ticket twice. The dispatcher queues them
(`Transaction.write_later`, `update_later`) as upserts on an existing `_id`, so a claim that matches
nothing fails the transaction rather than passing unnoticed (`_or_abort`). Instants are stored as epoch milliseconds.

The repositories hang on the transaction (`RoutingTransaction`: `tx.tickets`, `tx.agents`, `tx.affinities`),
built once per transaction. Routed tickets come and go as the `RoutedTicket` aggregate: a transition is
stored with a filter on the values it started from (`RoutedTicketRepository.apply` and `claim`).

Inside a transaction the repositories read through `Transaction.cache`: what they read or wrote there
is served without a round trip, and queued writes keep it true. A batch reads what it needs with one
query per collection (`preload`), so a consumer batch or a drain costs a few round trips, not a few
per ticket.

Indexes serve the matching: agents are found by presence and free capacity (and, in MongoDB, by
`skill_keys`: one key per skill and level an agent covers, e.g. `billing:1`..`billing:3`), never by
a scan; the queue is read in order from the (state, urgency, created) index. Equalities are written
with `eq` so the embedded server uses those indexes too (see `shared.mongo_filters`). The queue's
depth by priority is a counter kept by the same transactions that move tickets in and out of it.
"""

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cached_property

from pymongo import ASCENDING, DESCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.routing.domain import (
    CHANNELS,
    Agent,
    EscalationPolicy,
    Presence,
    QueueSummary,
    Requirements,
    Room,
    RoutedTicket,
    RoutedTicketState,
    Transition,
    WaitingTicket,
    channel_capacity,
    primary_language,
    shortlist,
)
from services.routing.planning.repository import PlanningRepository
from shared.clock import from_ms, now_ms, to_ms, utc_now
from shared.events import Priority
from shared.mongo import KnownDocuments, Transaction
from shared.mongo_filters import eq

CANDIDATE_LIMIT = 50
ANY_LANGUAGE = "*"

QUEUE_DEPTH = "queue_depth"
"""The counters document: waiting tickets by priority."""

KNOWN_AGENTS, KNOWN_AFFINITIES = "routing:agents", "routing:affinities"
"""`Transaction.cache` keys: what the transaction knows of each, by id (a customer known not to
exist: None); tickets are kept by `KnownDocuments`."""
CANDIDATES_READ = "routing:candidates"
TICKETS_QUEUED = "routing:tickets-queued"
DEPTH_MOVES = "routing:depth-moves"
"""`Transaction.cache` key: the `$inc` of the queue-depth update queued in the transaction, which later
moves add to until it is sent. Only `RoutedTicketRepository._flush` sends it early, and forgets it."""


def _or_abort(query: dict, update: dict) -> UpdateOne:
    """A conditional update to queue whose mismatch fails the transaction.

    Nobody reads the results of queued writes, so a claim that matched nothing would pass unnoticed.
    As an upsert on an `_id` that exists, a mismatch instead inserts that `_id` again: a duplicate-key
    error, which fails the bulk write and so the transaction (both on MongoDB and on nx-27017).
    """
    return UpdateOne(query, update, upsert=True)


class AgentRepository:
    def __init__(self, tx: Transaction) -> None:
        self._agents = tx.db["agents"]
        self._tx = tx
        self._session = tx.session
        self._cache = tx.cache
        self._known: dict[str, Agent] = self._cache.setdefault(KNOWN_AGENTS, {})

    async def ensure_indexes(self) -> None:
        await self._agents.create_index([("skill_keys", ASCENDING), ("status", ASCENDING), ("free", DESCENDING)])
        await self._agents.create_index([("status", ASCENDING), ("free", DESCENDING)])

    async def get(self, agent_id: str) -> Agent | None:
        if agent_id not in self._known:
            document = await self._agents.find_one({"_id": agent_id}, session=self._session)
            if document is None:
                return None
            self._known[agent_id] = _agent(document)
        return self._known[agent_id]

    async def page(self, *, after: str | None, limit: int) -> list[Agent]:
        query = {"_id": {"$gt": after}} if after else {}
        documents = await self._agents.find(query, session=self._session).sort("_id", ASCENDING).limit(limit).to_list()
        return [_agent(document) for document in documents]

    async def create(self, agent: Agent) -> bool:
        """Insert a new agent; False when one with this id appeared meanwhile."""
        self._known.pop(agent.id, None)
        if await self._agents.find_one({"_id": agent.id}, {"_id": 1}, session=self._session):
            return False
        await self._agents.insert_one(_document(agent), session=self._session)
        return True

    async def replace(self, agent: Agent, *, expected_version: int) -> bool:
        """Write the whole profile back, only if nobody changed the agent (say, claimed a slot) meanwhile."""
        self._known.pop(agent.id, None)
        replaced = await self._agents.find_one_and_replace(
            {"_id": agent.id, "version": expected_version}, _document(agent), session=self._session
        )
        return replaced is not None

    async def candidates(
        self, requirements: Requirements, *, limit: int = CANDIDATE_LIMIT, headroom: int = 0
    ) -> list[Agent]:
        """Agents who meet the hard constraints, most free first, from the skill index.

        Read once per requirements in a transaction, then as its claims left them. `headroom`, at
        most how many slots the transaction claims, widens that one read: an agent it leaves out
        has at least `limit` others as free as them that no claim touched, so is never missed.
        """
        read = self._cache.get((CANDIDATES_READ, requirements))
        if read is None:
            documents = await self._matching(requirements, limit + headroom)
            for document in documents:
                self._known.setdefault(document["_id"], _agent(document))  # a claimed agent: as claimed
            read = self._cache[(CANDIDATES_READ, requirements)] = [document["_id"] for document in documents]
        return shortlist((self._known[agent_id] for agent_id in read), requirements, limit)

    async def _matching(self, requirements: Requirements, limit: int) -> list[dict]:
        channel = requirements.channel
        query: dict = {
            **eq(status=Presence.AVAILABLE.value),
            "free": {"$gt": 0},
            f"free_by_channel.{channel}": {"$gt": 0},
            "tier": {"$in": sorted(requirements.tiers)},
        }
        keys = [f"{skill}:{level}" for skill, level in requirements.skills]
        if keys:
            query["skill_keys"] = {"$all": keys}
        if requirements.language:
            query["language_keys"] = {"$in": [requirements.language, ANY_LANGUAGE]}
        if requirements.teams is not None:
            query["team"] = {"$in": sorted(requirements.teams)}
        if requirements.exclude:
            query["_id"] = {"$nin": sorted(requirements.exclude)}
        return await self._agents.find(query, session=self._session).sort("free", DESCENDING).limit(limit).to_list()

    async def upgrade_legacy(self) -> int:
        """Agents stored by the walking skeleton (no skill index, no per-channel load): rewrite them.

        Their held tickets had no channel in routing's records, so their load counts on `web`.
        """
        documents = await self._agents.find({"skill_keys": {"$exists": False}}, session=self._session).to_list()
        for document in documents:
            load = int(document.get("load", 0))
            agent = Agent.model_validate(
                {**document, "id": document["_id"], "load": load, "load_by_channel": {"web": load} if load else {}}
            )
            await self._agents.replace_one({"_id": agent.id}, _document(agent), session=self._session)
            await self._refresh_free(agent)
        return len(documents)

    async def anyone_free(self) -> bool:
        found = await self._agents.find_one(
            {**eq(status=Presence.AVAILABLE.value), "free": {"$gt": 0}}, {"_id": 1}, session=self._session
        )
        return found is not None

    def claim_slot(self, agent: Agent, channel: str) -> Agent:
        """Take one unit of capacity on `channel` from `agent` as this transaction knows them (`get`,
        `candidates`), who has room there: queued, expecting that version, as an upsert (`_or_abort`).
        The agent's later claims in the same transaction expect the version this one leaves, so they fold
        into it (`Transaction.update_later`): one write per agent per batch, guarded by the first version."""
        now = now_ms()
        claimed = agent.claimed(channel, from_ms(now))
        self._tx.update_later(
            "agents",
            agent.id,
            {"$inc": {"load": 1, "free": -1, f"load_by_channel.{channel}": 1, "version": 1},
             "$set": {"last_assigned_ms": now, "updated_ms": now, "free_by_channel": claimed.free_by_channel}},
            upsert=True,
            condition={"version": agent.version},
        )
        self._known[agent.id] = claimed
        return claimed

    async def release_slot(self, agent_id: str, channel: str) -> Agent | None:
        """Give back one unit of capacity on `channel` (never below zero)."""
        self._known.pop(agent_id, None)
        released = await self._agents.find_one_and_update(
            {"_id": agent_id, f"load_by_channel.{channel}": {"$gt": 0}},
            {"$inc": {"load": -1, "free": 1, f"load_by_channel.{channel}": -1, "version": 1}},
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        if released is None:
            return None
        agent = _agent(released)
        await self._refresh_free(agent)
        return agent

    async def set_status(
        self, agent_id: str, status: Presence, at: datetime, *, only_if_newer: bool = False
    ) -> tuple[Agent, Agent] | None:
        """The agent after the change (the presence in force since `at`) and before it.

        None for an unknown agent or, `only_if_newer`, when the presence in force is not older than
        `at` (a newer change came first); an agent stored without the instant counts as older.
        """
        at_ms = to_ms(at)
        self._known.pop(agent_id, None)
        query: dict = {"_id": agent_id}
        if only_if_newer:
            older = {"$or": [{"presence_changed_ms": {"$exists": False}}, {"presence_changed_ms": {"$lt": at_ms}}]}
            query = {"$and": [query, older]}  # `$and`: nx-27017 ignores `_id` beside a top-level `$or`
        before = await self._agents.find_one_and_update(
            query,
            {"$set": {"status": status.value, "presence_changed_ms": at_ms, "updated_ms": now_ms()},
             "$inc": {"version": 1}},
            session=self._session,
        )
        if before is None:
            return None
        return (await self.get(agent_id), _agent(before))

    async def _refresh_free(self, agent: Agent) -> None:
        """Per-channel free capacity is derived (it depends on the pool too); store it for the index."""
        await self._agents.update_one(
            {"_id": agent.id}, {"$set": {"free_by_channel": agent.free_by_channel}}, session=self._session
        )


class RoutedTicketRepository:
    """Routing's own view of tickets: waiting, offered to an agent, assigned, or done."""

    def __init__(self, tx: Transaction) -> None:
        self._tickets = tx.db["tickets"]
        self._counters = tx.db["counters"]
        self._tx = tx
        self._session = tx.session
        self._cache = tx.cache
        self._known = KnownDocuments(self._tickets, tx)

    async def ensure_indexes(self) -> None:
        await self._tickets.create_index([("state", ASCENDING), ("urgency", DESCENDING), ("created_ms", ASCENDING)])
        await self._tickets.create_index([("state", ASCENDING), ("next_escalation_ms", ASCENDING)])
        await self._tickets.create_index([("state", ASCENDING), ("offer_expires_ms", ASCENDING)])
        await self._tickets.create_index([("state", ASCENDING), ("decline_lapse_ms", ASCENDING)])
        await self._tickets.create_index([("offer_ids", ASCENDING)])
        await self._tickets.create_index([("offer_id", ASCENDING)])
        await self._tickets.create_index([("assignee_id", ASCENDING), ("state", ASCENDING)])

    async def seed_queue_depth(self) -> None:
        """Counts the queue once, for tickets stored before its counter existed (or by an older release)."""
        if await self._counters.find_one({"_id": QUEUE_DEPTH}) is not None:
            return
        waiting = RoutedTicketState.WAITING
        depth = {p.value: await self._tickets.count_documents(eq(state=waiting, priority=p.value)) for p in Priority}
        try:
            await self._counters.insert_one({"_id": QUEUE_DEPTH, **depth})
        except DuplicateKeyError:
            pass  # another replica seeded it first

    async def get(self, ticket_id: str) -> RoutedTicket | None:
        document = await self._known.get(ticket_id)
        return routed_ticket(document) if document is not None else None

    async def preload(self, ticket_ids: Iterable[str]) -> None:
        """Read these tickets in one query, so that `get` answers each without a round trip."""
        await self._known.load(ticket_ids)

    async def upgrade_legacy(self, policy: EscalationPolicy) -> int:
        """Tickets stored by the walking skeleton: add what the queue index and matching read."""
        documents = await self._tickets.find({"urgency": {"$exists": False}}, session=self._session).to_list()
        for document in documents:
            created = document["created_ms"]
            await self._tickets.update_one(
                {"_id": document["_id"]},
                {"$set": {"urgency": Priority(document["priority"]).rank, "sla_warned": False, "channel": "web",
                          "skill_levels": {}, "queued_ms": created, "escalation_step": 0,
                          "next_escalation_ms": _epoch_ms(policy.next_due_at(from_ms(created), 0)),
                          **declines_fields({}, None),
                          "assignee_id": document.get("assignee_id"), "version": 1}},
                session=self._session,
            )
        return len(documents) + await self._upgrade_declines()

    async def _upgrade_declines(self) -> int:
        """Earlier releases kept who declined (`declined_by`) without when: their cooldown counts from now."""
        documents = await self._tickets.find({"declined_by": {"$exists": True}}, session=self._session).to_list()
        now = utc_now()
        for document in documents:
            await self._tickets.update_one(
                {"_id": document["_id"]},
                {"$set": declines_fields(dict.fromkeys(document["declined_by"], now), now),
                 "$unset": {"declined_by": ""}},
                session=self._session,
            )
        return len(documents)

    async def enqueue(self, ticket: RoutedTicket) -> bool:
        """Adds the ticket to the queue unless routing knows it already: queued."""
        if await self.get(ticket.ticket_id) is not None:
            return False
        document = _ticket_document(ticket)
        self._queue(InsertOne(document))
        self._known.keep(document)
        self._count_waiting({ticket.priority.value: 1})
        return True

    async def any_waiting_or_offered(self) -> bool:
        """Whether the queue's chores (the sweep, escalation, lapsed declines, expired offers) have
        anything to look at: at most two indexed reads."""
        for state in (RoutedTicketState.WAITING, RoutedTicketState.OFFERED):
            if await self._tickets.find_one(eq(state=state), {"_id": 1}, session=self._session) is not None:
                return True
        return False

    async def waiting(self, limit: int) -> list[RoutedTicket]:
        """The queue, in order: most urgent first, then oldest."""
        return _routed_tickets(
            await self._tickets.find(eq(state=RoutedTicketState.WAITING), session=self._session)
            .sort([("urgency", DESCENDING), ("created_ms", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def waiting_for(
        self, agent: Agent, requirements_of: Callable[[WaitingTicket], Requirements], limit: int
    ) -> list[RoutedTicket]:
        """Waiting tickets `agent` can take, in queue order, at most as many as they have room for.

        The channels the agent has room on and their languages narrow the query; the rest of the
        hard constraints (skills, tier, team, declined) are checked on each ticket read, up to
        `limit` tickets read.
        """
        channels = [channel for channel in CHANNELS if agent.free_on(channel) > 0]
        if not channels:
            return []
        query: dict = {**eq(state=RoutedTicketState.WAITING), "channel": {"$in": channels}}
        if agent.languages:
            query["language"] = {"$in": [*sorted({primary_language(l) for l in agent.languages}), None]}
        room = Room(agent, requirements_of)
        cursor = (
            self._tickets.find(query, session=self._session)
            .sort([("urgency", DESCENDING), ("created_ms", ASCENDING)])
            .limit(limit)
        )
        try:
            async for document in cursor:
                room.offer(routed_ticket(document))
                if room.full:
                    break
        finally:
            await cursor.close()
        return room.taken

    async def apply(self, transition: Transition) -> RoutedTicket | None:
        """Store `transition` if the stored ticket still has the values it started from; the ticket after it,
        or None (a replica or an earlier event changed it meanwhile)."""
        await self._flush()
        ticket_id = transition.before.ticket_id
        changes = _changes(transition)
        before = await self._tickets.find_one_and_update(
            {"_id": ticket_id, **_unchanged(transition)}, {"$set": changes, "$inc": {"version": 1}},
            session=self._session,
        )
        if before is None:
            self._known.forget(ticket_id)
            return None
        return routed_ticket(self._changed(before, changes))

    def claim(self, transition: Transition) -> RoutedTicket:
        """Store `transition` (an offer or an assignment) on the ticket as this transaction read it: queued,
        expecting the values it started from (`_or_abort`). The ticket after it."""
        changes = _changes(transition)
        self._queue(_or_abort(
            {"_id": transition.before.ticket_id, **_unchanged(transition)}, {"$set": changes, "$inc": {"version": 1}}
        ))
        return routed_ticket(self._changed(_ticket_document(transition.before), changes))

    def _changed(self, before: dict, changes: dict) -> dict:
        """The document after `changes`, known to the transaction; the queue-depth counter follows its move."""
        after = self._known.keep({**before, **changes, "version": before.get("version", 0) + 1})
        moves: dict[str, int] = {}
        for document, step in ((before, -1), (after, 1)):
            if document["state"] == RoutedTicketState.WAITING:
                moves[document["priority"]] = moves.get(document["priority"], 0) + step
        self._count_waiting(moves)
        return after

    def _count_waiting(self, moves: dict[str, int]) -> None:
        """Adds to the transaction's one queued update of the counter (see `DEPTH_MOVES`)."""
        if not (moves := {priority: n for priority, n in moves.items() if n}):
            return
        if (pending := self._cache.get(DEPTH_MOVES)) is None:
            pending = self._cache[DEPTH_MOVES] = {}
            self._tx.write_later("counters", UpdateOne({"_id": QUEUE_DEPTH}, {"$inc": pending}, upsert=True))
        for priority, n in moves.items():
            pending[priority] = pending.get(priority, 0) + n

    def _queue(self, write: InsertOne | UpdateOne) -> None:
        self._tx.write_later("tickets", write)
        self._cache[TICKETS_QUEUED] = True

    async def _flush(self) -> None:
        """Send the transaction's queued writes before a command on tickets that must see them."""
        if self._cache.pop(TICKETS_QUEUED, False):
            await self._tx.flush()
            self._cache.pop(DEPTH_MOVES, None)

    async def held_by(self, agent_id: str, states: Iterable[str]) -> list[RoutedTicket]:
        await self._flush()
        return _routed_tickets(await self._tickets.find(
            {**eq(assignee_id=agent_id), "state": {"$in": list(states)}}, session=self._session
        ).to_list())

    async def by_offer(self, offer_id: str) -> RoutedTicket | None:
        """The ticket an offer was for, whether the offer is still open or not.

        An open offer is found by its index; a closed one only in the tickets' lists of offers,
        which the embedded server scans (`$in`: it misses plain equality on an array).
        """
        open_offer = await self._tickets.find_one(eq(offer_id=offer_id), session=self._session)
        document = open_offer or await self._tickets.find_one({"offer_ids": {"$in": [offer_id]}}, session=self._session)
        return routed_ticket(document) if document is not None else None

    async def offers_of(self, agent_id: str) -> list[RoutedTicket]:
        await self._flush()
        offered = eq(assignee_id=agent_id, state=RoutedTicketState.OFFERED)
        return _routed_tickets(await self._tickets.find(offered, session=self._session).to_list())

    async def offers_expired(self, now: int, limit: int) -> list[RoutedTicket]:
        return _routed_tickets(
            await self._tickets.find(
                {**eq(state=RoutedTicketState.OFFERED), "offer_expires_ms": {"$lte": now}}, session=self._session
            )
            .limit(limit)
            .to_list()
        )

    async def declines_lapsed(self, now: int, limit: int) -> list[RoutedTicket]:
        """Waiting tickets where an agent's decline cooldown ended: they may be offered it again."""
        return _routed_tickets(
            await self._tickets.find(
                {**eq(state=RoutedTicketState.WAITING), "decline_lapse_ms": {"$ne": None, "$lte": now}},
                session=self._session,
            )
            .limit(limit)
            .to_list()
        )

    async def escalation_due(self, now: int, limit: int) -> list[RoutedTicket]:
        return _routed_tickets(
            await self._tickets.find(
                {**eq(state=RoutedTicketState.WAITING), "next_escalation_ms": {"$ne": None, "$lte": now}},
                session=self._session,
            )
            .limit(limit)
            .to_list()
        )

    async def depth_by_priority(self) -> dict[str, int]:
        counters = await self._counters.find_one({"_id": QUEUE_DEPTH}, session=self._session) or {}
        return {priority.value: int(counters.get(priority.value, 0)) for priority in Priority}

    async def summary(self, now: int) -> QueueSummary:
        summary = QueueSummary()
        summary.by_priority = await self.depth_by_priority()
        summary.depth = sum(summary.by_priority.values())
        async for row in await self._tickets.aggregate(
            [{"$match": eq(state=RoutedTicketState.WAITING)}, {"$unwind": "$required_skills"},
             {"$group": {"_id": "$required_skills", "n": {"$sum": 1}}}],
            session=self._session,
        ):
            summary.by_skill[row["_id"]] = row["n"]
        async for row in await self._tickets.aggregate(
            [{"$match": eq(state=RoutedTicketState.WAITING)}, {"$group": {"_id": "$channel", "n": {"$sum": 1}}}],
            session=self._session,
        ):
            summary.by_channel[row["_id"]] = row["n"]
        oldest = (
            await self._tickets.find(eq(state=RoutedTicketState.WAITING), {"created_ms": 1}, session=self._session)
            .sort("created_ms", ASCENDING)
            .limit(1)
            .to_list()
        )
        if oldest:
            summary.oldest_ticket_id = oldest[0]["_id"]
            summary.oldest_wait_seconds = max(0.0, (now - oldest[0]["created_ms"]) / 1000)
        return summary


class AffinityRepository:
    """The agent who last took each customer's ticket, for the affinity window."""

    def __init__(self, tx: Transaction) -> None:
        self._customers = tx.db["customer_agents"]
        self._tx = tx
        self._known: dict[str, tuple[str, int] | None] = tx.cache.setdefault(KNOWN_AFFINITIES, {})

    def remember(self, customer_id: str, agent_id: str, at_ms: int) -> None:
        """Queued: nothing in the transaction needs its result, and `last_agent` answers from memory."""
        self._tx.replace_later("customer_agents", {"_id": customer_id, "agent_id": agent_id, "at_ms": at_ms})
        self._known[customer_id] = (agent_id, at_ms)

    async def preload(self, customer_ids: Iterable[str]) -> None:
        """Read these customers' last agents in one query, so that `last_agent` answers each from memory."""
        if unknown := sorted(set(customer_ids) - self._known.keys()):
            rows = await self._customers.find({"_id": {"$in": unknown}}, session=self._tx.session).to_list()
            found = {row["_id"]: (row["agent_id"], row["at_ms"]) for row in rows}
            self._known.update({customer_id: found.get(customer_id) for customer_id in unknown})

    async def last_agent(self, customer_id: str) -> tuple[str, int] | None:
        await self.preload([customer_id])
        return self._known[customer_id]


def _skill_keys(skills: dict[str, int]) -> list[str]:
    return [f"{skill}:{level}" for skill, top in skills.items() for level in range(1, top + 1)]


def _document(agent: Agent) -> dict:
    limits, total = channel_capacity(agent.capacity)
    document = agent.model_dump(mode="json", exclude={"id", "last_assigned_at", "presence_changed_at"})
    document.update(
        _id=agent.id,
        skill_keys=_skill_keys(agent.skills),
        language_keys=sorted({primary_language(l) for l in agent.languages}) or [ANY_LANGUAGE],
        capacity_by_channel=limits,
        total_capacity=total,
        free=total - agent.load,  # may go below zero when capacity shrinks under held tickets
        load_by_channel={channel: agent.load_by_channel.get(channel, 0) for channel in CHANNELS},
        last_assigned_ms=to_ms(agent.last_assigned_at) if agent.last_assigned_at else None,
        updated_ms=now_ms(),
    )
    if agent.presence_changed_at:  # never null: nx-27017 would not match a stored null as "no instant"
        document["presence_changed_ms"] = to_ms(agent.presence_changed_at)
    return document


def _agent(document: dict) -> Agent:
    last, presence = document.get("last_assigned_ms"), document.get("presence_changed_ms")
    return Agent.model_validate(
        {**document, "id": document["_id"], "last_assigned_at": from_ms(last) if last else None,
         "presence_changed_at": from_ms(presence) if presence is not None else None}
    )


def declines_fields(declines: dict[str, datetime], lapse_at: datetime | None) -> dict:
    """How a ticket's declines are stored: a list, not a map (agent ids may hold dots, awkward in field
    names), and when to look at the ticket again because a cooldown ends (`declines_lapsed`)."""
    return {
        "declines": [{"agent_id": agent, "at_ms": to_ms(at)} for agent, at in sorted(declines.items())],
        "decline_lapse_ms": to_ms(lapse_at) if lapse_at else None,
    }


def routed_ticket(document: dict) -> RoutedTicket:
    return RoutedTicket(
        ticket_id=document["_id"],
        state=document["state"],
        priority=Priority(document["priority"]),
        required_skills=document["required_skills"],
        skill_levels=document.get("skill_levels") or {},
        channel=document.get("channel") or "web",
        language=document.get("language"),
        category=document.get("category"),
        customer_id=document.get("customer_id"),
        previous_agent_id=document.get("previous_agent_id"),
        created_at=from_ms(document["created_ms"]),
        queued_at=from_ms(document.get("queued_ms") or document["created_ms"]),
        sla_warned=document.get("sla_warned", False),
        escalation_step=document.get("escalation_step", 0),
        declines={row["agent_id"]: from_ms(row["at_ms"]) for row in document.get("declines") or []},
        version=document.get("version", 1),
        assignee_id=document.get("assignee_id"),
        previous_assignee_id=document.get("previous_assignee_id"),
        return_to=document.get("return_to"),
        offer_id=document.get("offer_id"),
        offer_ids=document.get("offer_ids") or [],
        offer_expires_at=_instant(document.get("offer_expires_ms")),
        assigned_at=_instant(document.get("assigned_ms")),
        reason=document.get("reason"),
        finished_at=_instant(document.get("finished_ms")),
        finished_as=document.get("finished_as"),
        next_escalation_at=_instant(document.get("next_escalation_ms")),
        decline_lapse_at=_instant(document.get("decline_lapse_ms")),
        correlation_id=document.get("correlation_id"),
        causation_id=document.get("causation_id"),
    )


def _routed_tickets(documents: list[dict]) -> list[RoutedTicket]:
    return [routed_ticket(document) for document in documents]


def _ticket_document(ticket: RoutedTicket) -> dict:
    return {
        "_id": ticket.ticket_id,
        "state": ticket.state,
        "priority": ticket.priority.value,
        "urgency": ticket.urgency,
        "sla_warned": ticket.sla_warned,
        "required_skills": ticket.required_skills,
        "skill_levels": ticket.skill_levels,
        "channel": ticket.channel.value,
        "language": ticket.language,
        "category": ticket.category,
        "customer_id": ticket.customer_id,
        "previous_agent_id": ticket.previous_agent_id,
        "created_ms": to_ms(ticket.created_at),
        "queued_ms": to_ms(ticket.queued_at or ticket.created_at),
        "escalation_step": ticket.escalation_step,
        "next_escalation_ms": _epoch_ms(ticket.next_escalation_at),
        **declines_fields(ticket.declines, ticket.decline_lapse_at),
        "assignee_id": ticket.assignee_id,
        "previous_assignee_id": ticket.previous_assignee_id,
        "return_to": ticket.return_to,
        "offer_id": ticket.offer_id,
        "offer_ids": ticket.offer_ids,
        "offer_expires_ms": _epoch_ms(ticket.offer_expires_at),
        "assigned_ms": _epoch_ms(ticket.assigned_at),
        "reason": ticket.reason,
        "finished_ms": _epoch_ms(ticket.finished_at),
        "finished_as": ticket.finished_as,
        "version": ticket.version,
        "correlation_id": ticket.correlation_id,
        "causation_id": ticket.causation_id,
    }


def _changes(transition: Transition) -> dict:
    """The stored fields a transition changes, and when."""
    before, after = _ticket_document(transition.before), _ticket_document(transition.after)
    return {**{name: value for name, value in after.items() if before[name] != value}, "updated_ms": now_ms()}


def _unchanged(transition: Transition) -> dict:
    """The filter for "still as read": the stored values of the fields the transition started from."""
    before = _ticket_document(transition.before)
    return {name: before[name] for name in transition.unchanged}


def _instant(epoch_ms: int | None) -> datetime | None:
    return from_ms(epoch_ms) if epoch_ms is not None else None


def _epoch_ms(instant: datetime | None) -> int | None:
    return to_ms(instant) if instant is not None else None


class RoutingTransaction(Transaction):
    """Routing's transaction: its repositories, built once per transaction (`tx.tickets`…)."""

    @cached_property
    def tickets(self) -> RoutedTicketRepository:
        return RoutedTicketRepository(self)

    @cached_property
    def agents(self) -> AgentRepository:
        return AgentRepository(self)

    @cached_property
    def affinities(self) -> AffinityRepository:
        return AffinityRepository(self)

    @cached_property
    def planning(self) -> PlanningRepository:
        return PlanningRepository(self)

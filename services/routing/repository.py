"""MongoDB adapters for routing: agents and the tickets routing is responsible for.

Capacity and assignment are claimed with conditional updates, so two replicas can never
overfill an agent or assign one ticket twice.
"""

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.routing.domain import Agent, Presence, WaitingTicket
from shared.clock import from_ms, now_ms, to_ms
from shared.events import Priority

CANDIDATE_LIMIT = 50


class AgentRepository:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._agents = db["agents"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._agents.create_index([("status", ASCENDING), ("free", DESCENDING)])

    async def get(self, agent_id: str) -> Agent | None:
        document = await self._agents.find_one({"_id": agent_id}, session=self._session)
        return _agent(document) if document else None

    async def save(self, agent: Agent) -> None:
        document = agent.model_dump(exclude={"id"})  # includes `free`, which queries filter on
        document.update(_id=agent.id, updated_ms=now_ms())
        await self._agents.replace_one({"_id": agent.id}, document, upsert=True, session=self._session)

    async def candidates_for(self, ticket: WaitingTicket) -> list[Agent]:
        query = {"status": Presence.AVAILABLE.value, "free": {"$gt": 0}}
        query.update({f"skills.{skill}": {"$gte": 1} for skill in ticket.required_skills})
        documents = (
            await self._agents.find(query, session=self._session)
            .sort("free", DESCENDING)
            .limit(CANDIDATE_LIMIT)
            .to_list()
        )
        return [_agent(document) for document in documents]

    async def anyone_free(self) -> bool:
        found = await self._agents.find_one(
            {"status": Presence.AVAILABLE.value, "free": {"$gt": 0}}, {"_id": 1}, session=self._session
        )
        return found is not None

    async def claim_slot(self, agent_id: str) -> bool:
        """Take one unit of capacity, only if the agent is still available with a free slot."""
        claimed = await self._agents.find_one_and_update(
            {"_id": agent_id, "status": Presence.AVAILABLE.value, "free": {"$gt": 0}},
            {"$inc": {"load": 1, "free": -1}},
            session=self._session,
            return_document=ReturnDocument.AFTER,
        )
        return claimed is not None


class RoutedTicketRepository:
    """Routing's own view of tickets: waiting in the queue, or assigned to an agent."""

    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._tickets = db["tickets"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._tickets.create_index(
            [("state", ASCENDING), ("priority_rank", DESCENDING), ("created_ms", ASCENDING)]
        )

    async def enqueue(self, ticket: WaitingTicket) -> bool:
        """Adds the ticket to the queue unless routing knows it already."""
        if await self._tickets.find_one({"_id": ticket.ticket_id}, {"_id": 1}, session=self._session):
            return False
        await self._tickets.insert_one(
            {
                "_id": ticket.ticket_id,
                "state": "waiting",
                "priority": ticket.priority.value,
                "priority_rank": ticket.priority.rank,
                "required_skills": ticket.required_skills,
                "created_ms": to_ms(ticket.created_at),
            },
            session=self._session,
        )
        return True

    async def waiting(self, limit: int) -> list[WaitingTicket]:
        documents = (
            await self._tickets.find({"state": "waiting"}, session=self._session)
            .sort([("priority_rank", DESCENDING), ("created_ms", ASCENDING)])
            .limit(limit)
            .to_list()
        )
        return [_waiting(document) for document in documents]

    async def mark_assigned(self, ticket_id: str, agent_id: str) -> bool:
        """Only a waiting ticket can be assigned: the guard against assigning it twice."""
        assigned = await self._tickets.find_one_and_update(
            {"_id": ticket_id, "state": "waiting"},
            {"$set": {"state": "assigned", "assignee_id": agent_id, "assigned_ms": now_ms()}},
            session=self._session,
        )
        return assigned is not None

    async def assignee_of(self, ticket_id: str) -> str | None:
        document = await self._tickets.find_one({"_id": ticket_id}, session=self._session)
        return document.get("assignee_id") if document else None


def _agent(document: dict) -> Agent:
    return Agent.model_validate({**document, "id": document["_id"]})


def _waiting(document: dict) -> WaitingTicket:
    return WaitingTicket(
        ticket_id=document["_id"],
        priority=Priority(document["priority"]),
        required_skills=document["required_skills"],
        created_at=from_ms(document["created_ms"]),
    )

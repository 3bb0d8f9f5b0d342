"""MongoDB adapter for SLA clocks: one document per ticket and metric."""

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from services.sla.domain import Clock
from shared.clock import from_ms, to_ms


class ClockRepository:
    def __init__(self, db: AsyncDatabase, session: AsyncClientSession | None = None) -> None:
        self._clocks = db["clocks"]
        self._session = session

    async def ensure_indexes(self) -> None:
        await self._clocks.create_index([("ticket_id", ASCENDING)])
        await self._clocks.create_index([("state", ASCENDING), ("due_ms", ASCENDING)])

    async def start(self, clock: Clock) -> bool:
        """Stores a new clock; False when this ticket's clock for the metric already exists."""
        clock_id = f"{clock.ticket_id}:{clock.metric.value}"
        if await self._clocks.find_one({"_id": clock_id}, {"_id": 1}, session=self._session):
            return False
        document = clock.model_dump(mode="json", exclude={"started_at", "due_at"})
        document.update(_id=clock_id, started_ms=to_ms(clock.started_at), due_ms=to_ms(clock.due_at))
        await self._clocks.insert_one(document, session=self._session)
        return True

    async def of_ticket(self, ticket_id: str) -> list[Clock]:
        documents = await self._clocks.find({"ticket_id": ticket_id}, session=self._session).sort("_id").to_list()
        return [
            Clock.model_validate(
                {**document, "started_at": from_ms(document["started_ms"]), "due_at": from_ms(document["due_ms"])}
            )
            for document in documents
        ]

"""Routing's REST API: agents' profiles and presence, offers, and what the queue looks like."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from services.routing.agents import Agents
from services.routing.domain import Agent, AgentProfile, OfferClosed, PresenceChange, UnknownAgent, UnknownOffer
from services.routing.offers import Offers
from services.routing.views import RoutingViews
from shared.events import OfferOutcome
from shared.http import BODY, KEYED, problem_answers

AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]
OfferId = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]


class AgentPage(BaseModel):
    agents: list[Agent]
    next_after: str | None


class QueueView(BaseModel):
    depth: int
    by_priority: dict[str, int]
    by_skill: dict[str, int]
    by_channel: dict[str, int]
    oldest_ticket_id: str | None
    oldest_wait_seconds: float


class OfferView(BaseModel):
    offer_id: str
    ticket_id: str
    expires_at: str = Field(description="When the offer lapses (ISO 8601).")


class OfferAnswerView(BaseModel):
    offer_id: str
    ticket_id: str
    agent_id: str
    outcome: OfferOutcome


NO_AGENT = {404: "no such agent"}
NO_OFFER = {404: "no such offer", 409: "the offer was answered or withdrawn, or has expired"}


def build_routes(agents: Agents, offers: Offers, views: RoutingViews, require_api_key, needs) -> APIRouter:
    routes = APIRouter(
        prefix="/v1", tags=["routing"], dependencies=[Depends(require_api_key)], responses=problem_answers(*KEYED)
    )
    on_agents, read = [needs("agents")], [needs("tickets:read")]

    @routes.put("/agents/{agent_id}", dependencies=on_agents, responses=problem_answers(*BODY))
    async def put_agent(agent_id: AgentId, profile: AgentProfile) -> Agent:
        """Create or update an agent; the answer carries `load` and `free`, in total and per channel."""
        return await agents.put_agent(agent_id, profile)

    @routes.patch("/agents/{agent_id}", dependencies=on_agents, responses=problem_answers(*BODY, reasons=NO_AGENT))
    async def patch_agent(agent_id: AgentId, change: PresenceChange) -> Agent:
        """Change presence: `{"status": "available" | "away" | "offline"}`."""
        try:
            return await agents.set_presence(agent_id, change.status)
        except UnknownAgent:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id}") from None

    @routes.get("/agents/{agent_id}", dependencies=on_agents, responses=problem_answers(422, reasons=NO_AGENT))
    async def get_agent(agent_id: AgentId) -> Agent:
        agent = await views.get_agent(agent_id)
        if agent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id}")
        return agent

    @routes.get("/agents", dependencies=on_agents, responses=problem_answers(422))
    async def list_agents(
        after: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AgentPage:
        """Agents in id order with their load per channel; page on with `after=<next_after>`."""
        page = await views.list_agents(after=after, limit=limit)
        return AgentPage(agents=page, next_after=page[-1].id if len(page) == limit else None)

    @routes.get("/agents/{agent_id}/offers", dependencies=on_agents, responses=problem_answers(422, reasons=NO_AGENT))
    async def agent_offers(agent_id: AgentId) -> list[OfferView]:
        """The agent's open offers, to answer with `POST /v1/offers/{offer_id}/accept` or `/reject`."""
        try:
            return await views.offers_for(agent_id)
        except UnknownAgent:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id}") from None

    @routes.post("/offers/{offer_id}/accept", dependencies=on_agents, responses=problem_answers(422, reasons=NO_OFFER))
    async def accept(offer_id: OfferId) -> OfferAnswerView:
        return await _answer(offer_id, accept=True)

    @routes.post("/offers/{offer_id}/reject", dependencies=on_agents, responses=problem_answers(422, reasons=NO_OFFER))
    async def reject(offer_id: OfferId) -> OfferAnswerView:
        return await _answer(offer_id, accept=False)

    async def _answer(offer_id: str, *, accept: bool) -> OfferAnswerView:
        try:
            answer = await offers.answer_offer(offer_id, accept=accept)
        except UnknownOffer:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no offer {offer_id}") from None
        except OfferClosed as closed:
            raise HTTPException(status.HTTP_409_CONFLICT, str(closed)) from None
        return OfferAnswerView(
            offer_id=answer.offer_id, ticket_id=answer.ticket_id, agent_id=answer.agent_id, outcome=answer.outcome
        )

    @routes.get("/queues", dependencies=read)
    async def queues() -> QueueView:
        """Waiting tickets: depth by priority, skill and channel, and the longest wait."""
        summary = await views.queue_summary()
        return QueueView(**summary.__dict__)

    @routes.get(
        "/tickets/{ticket_id}",
        dependencies=read,
        responses=problem_answers(422, reasons={404: "routing knows no such ticket"}),
    )
    async def ticket(ticket_id: Annotated[str, Path(max_length=200)]) -> dict:
        """Routing's view of a ticket: state, assignee or open offer, escalation step, current requirements."""
        view = await views.ticket_view(ticket_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"routing knows no ticket {ticket_id}")
        return view

    return routes

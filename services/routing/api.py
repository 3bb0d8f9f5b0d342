"""Routing's REST API: agents' profiles, skills, capacity and presence."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status

from services.routing.domain import Agent, AgentProfile
from services.routing.service import Routing

AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]


def build_routes(routing: Routing, require_api_key) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["agents"], dependencies=[Depends(require_api_key)])

    @routes.put("/agents/{agent_id}")
    async def put_agent(agent_id: AgentId, profile: AgentProfile) -> Agent:
        return await routing.put_agent(agent_id, profile)

    @routes.get("/agents/{agent_id}")
    async def get_agent(agent_id: AgentId) -> Agent:
        agent = await routing.get_agent(agent_id)
        if agent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id}")
        return agent

    return routes

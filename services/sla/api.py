"""SLA's REST API: the clocks of a ticket."""

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel

from services.sla.domain import ClockState
from services.sla.service import Sla
from shared.clock import utc_now


class ClockView(BaseModel):
    metric: str
    policy: str
    state: ClockState
    target_seconds: int
    started_at: datetime
    due_at: datetime
    elapsed_seconds: float
    remaining_seconds: float


class TicketClocks(BaseModel):
    ticket_id: str
    clocks: list[ClockView]


def build_routes(sla: Sla, require_api_key) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["sla"], dependencies=[Depends(require_api_key)])

    @routes.get("/tickets/{ticket_id}/sla", response_model=TicketClocks)
    async def ticket_clocks(ticket_id: str) -> TicketClocks:
        clocks = await sla.clocks_of(ticket_id)
        if not clocks:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no SLA clocks for ticket {ticket_id}")
        now = utc_now()
        return TicketClocks(
            ticket_id=ticket_id,
            clocks=[
                ClockView(
                    **clock.model_dump(exclude={"ticket_id"}),
                    elapsed_seconds=clock.elapsed_seconds(now),
                    remaining_seconds=clock.remaining_seconds(now),
                )
                for clock in clocks
            ],
        )

    return routes

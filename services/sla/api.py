"""SLA's REST API: the clocks of a ticket, and the policies in force."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, Field

from services.sla.domain import ClockState
from services.sla.service import Sla
from shared.http import KEYED, problem_answers


class ClockView(BaseModel):
    metric: str
    policy: str
    state: ClockState
    cycle: int = Field(description="1 for the first clock of the metric; next_reply and periodic_update count restarts.")
    target_seconds: int
    business_time: bool = Field(description="Whether the target counts business hours (else calendar time).")
    calendar: str
    started_at: datetime
    due_at: datetime | None = Field(description="When the target is used up; null while paused (nothing is due).")
    elapsed_seconds: float = Field(description="Time counted so far, in the clock's business (or calendar) time.")
    remaining_seconds: float = Field(description="Target minus elapsed; negative once breached.")
    breached: bool
    warnings_sent: list[float]
    paused_at: datetime | None
    fulfilled_at: datetime | None


class TicketClocks(BaseModel):
    ticket_id: str
    clocks: list[ClockView]


def build_routes(sla: Sla, require_api_key, needs) -> APIRouter:
    routes = APIRouter(
        prefix="/v1",
        tags=["sla"],
        dependencies=[Depends(require_api_key), needs("tickets:read")],
        responses=problem_answers(*KEYED),
    )

    @routes.get(
        "/tickets/{ticket_id}/sla",
        response_model=TicketClocks,
        responses=problem_answers(422, reasons={404: "no SLA clocks for the ticket (yet)"}),
    )
    async def ticket_clocks(ticket_id: Annotated[str, Path(max_length=200)]) -> TicketClocks:
        clocks = await sla.clocks_of(ticket_id)
        if not clocks:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no SLA clocks for ticket {ticket_id}")
        return TicketClocks(ticket_id=ticket_id, clocks=[ClockView.model_validate(clock) for clock in clocks])

    @routes.get("/policies")
    async def policies() -> dict:
        """The policies in the order they are tried, and their calendars."""
        return sla.policies()

    return routes

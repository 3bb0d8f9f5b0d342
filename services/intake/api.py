"""Intake's REST API: thin handlers that parse, call one use case, and answer."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status

from services.intake.domain import Ticket
from services.intake.repository import TicketRepository
from services.intake.service import IdempotencyConflict, Intake
from shared.events import TicketSubmit


def build_routes(intake: Intake, tickets: TicketRepository, require_api_key) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["tickets"], dependencies=[Depends(require_api_key)])

    @routes.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=Ticket)
    async def submit_ticket(
        submission: TicketSubmit,
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    ) -> Ticket:
        try:
            submitted = await intake.submit(submission, idempotency_key=idempotency_key)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "Idempotency-Key was already used for a different submission"
            ) from None
        response.headers["Location"] = f"/v1/tickets/{submitted.ticket.id}"
        if submitted.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return submitted.ticket

    @routes.get("/tickets/{ticket_id}", response_model=Ticket)
    async def get_ticket(ticket_id: str) -> Ticket:
        ticket = await tickets.get(ticket_id)
        if ticket is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
        return ticket

    return routes

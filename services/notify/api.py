"""Notify's REST API: what was sent about a ticket, for staff holding an API key.

Recipients' addresses and message bodies are left out: the ticket in intake already names the
customer, and status questions ("did the acknowledgement go out?") need neither.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from services.notify.domain import DeliveryChannel, DeliveryKind, DeliveryState
from services.notify.repository import DeliveryRepository


class NotificationView(BaseModel):
    id: str
    kind: DeliveryKind
    channel: DeliveryChannel
    state: DeliveryState
    attempts: int
    message_id: str
    sent_at: datetime | None
    last_error: str | None


class TicketNotifications(BaseModel):
    ticket_id: str
    notifications: list[NotificationView]


def build_routes(deliveries: DeliveryRepository, require_api_key) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["notifications"], dependencies=[Depends(require_api_key)])

    @routes.get("/notifications", response_model=TicketNotifications)
    async def list_notifications(
        ticket_id: Annotated[str, Query(min_length=1, max_length=200)],
    ) -> TicketNotifications:
        found = await deliveries.for_ticket(ticket_id)
        return TicketNotifications(
            ticket_id=ticket_id,
            notifications=[NotificationView.model_validate(delivery.model_dump()) for delivery in found],
        )

    return routes

"""Composition root: wires SLA's use cases to the platform kit."""

from fastapi import FastAPI

from services.sla.api import build_routes
from services.sla.repository import ClockRepository
from services.sla.service import Sla
from services.sla.settings import SlaSettings
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription
from shared.events import TicketCreated


def build_app(settings: SlaSettings | None = None) -> FastAPI:
    settings = settings or SlaSettings()
    kit = ServiceKit.create("sla", settings)
    sla = Sla(kit.uow, kit.source, settings.first_reply_target_seconds)
    return kit.create_app(
        description="Runs the SLA clocks of every ticket and warns before they breach.",
        api=build_routes(sla, kit.require_api_key()),
        subscriptions=[Subscription(topics.TICKETS, {TicketCreated: sla.on_ticket_created})],
        ensure_indexes=[ClockRepository(kit.db).ensure_indexes],
    )

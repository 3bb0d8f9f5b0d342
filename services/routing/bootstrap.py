"""Composition root: wires routing's use cases to the platform kit."""

from fastapi import FastAPI

from services.routing.api import build_routes
from services.routing.repository import AgentRepository, RoutedTicketRepository
from services.routing.service import Routing
from services.routing.settings import RoutingSettings
from shared import topics
from shared.app import ServiceKit, repeat
from shared.consumer import Subscription
from shared.events import TicketCreated


def build_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    kit = ServiceKit.create("routing", settings)
    routing = Routing(kit.uow, kit.source)
    sweeper_lease = kit.lease("queue-sweeper", ttl_seconds=max(10.0, 3 * settings.queue_sweep_interval_seconds))

    return kit.create_app(
        description="Assigns each ticket to an available agent with the right skills and free capacity.",
        api=build_routes(routing, kit.require_api_key()),
        subscriptions=[Subscription(topics.TICKETS, {TicketCreated: routing.on_ticket_created})],
        ensure_indexes=[AgentRepository(kit.db).ensure_indexes, RoutedTicketRepository(kit.db).ensure_indexes],
        background=[repeat(settings.queue_sweep_interval_seconds, lambda: routing.sweep_queue(sweeper_lease))],
    )

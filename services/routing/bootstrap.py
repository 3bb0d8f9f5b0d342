"""Composition root: wires routing's use cases to the platform kit.

The escalation workflow is validated when the settings load (`RoutingSettings`), so a bad one
stops the service at start with the reason, before anything connects.
"""

from datetime import timedelta

from fastapi import FastAPI

from services.routing.api import build_routes
from services.routing.metrics import RoutingMetrics
from services.routing.repository import AgentRepository, RoutedTicketRepository
from services.routing.service import Routing, RoutingConfig
from services.routing.settings import RoutingSettings
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription
from shared.events import (
    AgentStatusChanged,
    SlaWarning,
    TicketClosed,
    TicketCreated,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
)


def build_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    kit = ServiceKit.create("routing", settings)
    config = RoutingConfig(
        mode=settings.routing_mode,
        offer_timeout=timedelta(seconds=settings.offer_timeout_seconds),
        unassign_on=frozenset(settings.unassign_on_presence),
        affinity_window=timedelta(seconds=settings.affinity_window_seconds),
        policy=settings.escalation_policy(),
        decline_cooldown=timedelta(seconds=settings.offer_decline_cooldown_seconds),
    )
    routing = Routing(kit.uow, kit.source, RoutingMetrics(kit.registry), config)
    sweeper_lease = kit.lease("queue-sweeper", ttl_seconds=max(10.0, 3 * settings.queue_sweep_interval_seconds))

    async def dispatcher() -> None:
        await routing.run_dispatcher(sweeper_lease, settings.queue_sweep_interval_seconds)

    return kit.create_app(
        description="Assigns each ticket to the best available agent with the right skills, language and free "
        "capacity on its channel; keeps a priority queue, offers, escalation and presence.",
        api=build_routes(routing, kit.require_api_key(), kit.needs),
        prefetch=routing.prefetch,
        subscriptions=[
            Subscription(
                topics.TICKETS,
                {
                    TicketCreated: routing.on_ticket_created,
                    TicketPriorityChanged: routing.on_priority_changed,
                    TicketSolved: routing.on_solved,
                    TicketClosed: routing.on_closed,
                    TicketReopened: routing.on_reopened,
                },
            ),
            Subscription(topics.SLA, {SlaWarning: routing.on_sla_warning}),
            Subscription(topics.AGENTS, {AgentStatusChanged: routing.on_agent_status_changed}),
        ],
        ensure_indexes=[
            AgentRepository(kit.db).ensure_indexes,
            RoutedTicketRepository(kit.db).ensure_indexes,
            routing.upgrade_legacy_records,
            RoutedTicketRepository(kit.db).seed_queue_depth,
        ],
        background=[dispatcher],
    )

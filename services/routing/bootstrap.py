"""Composition root: wires routing's use cases to the platform kit.

The escalation workflow is validated when the settings load (`RoutingSettings`), so a bad one
stops the service at start with the reason, before anything connects.
"""

from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, FastAPI

from services.routing.agents import Agents
from services.routing.api import build_routes
from services.routing.dispatcher import Dispatcher
from services.routing.domain import RoutingConfig
from services.routing.escalation import Escalation
from services.routing.metrics import RoutingMetrics
from services.routing.offers import Offers
from services.routing.planning.api import build_planning_routes
from services.routing.planning.service import PlanningViews, SimulationJobs
from services.routing.publishing import TicketPublisher
from services.routing.repository import RoutingTransaction
from services.routing.settings import RoutingSettings
from services.routing.ticket_events import TicketEvents
from services.routing.views import RoutingViews
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
from shared.mongo import Lease, UnitOfWork


@dataclass(frozen=True)
class RoutingUseCases:
    dispatcher: Dispatcher
    tickets: TicketEvents
    agents: Agents
    offers: Offers
    escalation: Escalation
    views: RoutingViews

    async def run_dispatcher(self, lease: Lease, interval_seconds: float) -> None:
        """The dispatcher's loop; the lease holder's chores: offers expired, declines lapsed, escalation."""
        await self.dispatcher.run(
            lease,
            interval_seconds,
            chores=(self.offers.expire_offers, self.offers.revisit_declined, self.escalation.escalate),
        )


def routing_use_cases(
    uow: UnitOfWork[RoutingTransaction], source: str, metrics: RoutingMetrics, config: RoutingConfig
) -> RoutingUseCases:
    publisher = TicketPublisher(source)
    dispatcher = Dispatcher(uow, config, metrics, publisher)
    offers = Offers(uow, config, metrics, publisher, dispatcher)
    return RoutingUseCases(
        dispatcher=dispatcher,
        tickets=TicketEvents(config, dispatcher),
        agents=Agents(uow, config, metrics, publisher, dispatcher, offers),
        offers=offers,
        escalation=Escalation(uow, config, metrics, publisher, dispatcher),
        views=RoutingViews(uow, config, metrics),
    )


def build_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    kit = ServiceKit.create("routing", settings, RoutingTransaction)
    config = RoutingConfig(
        mode=settings.routing_mode,
        offer_timeout=timedelta(seconds=settings.offer_timeout_seconds),
        unassign_on=frozenset(settings.unassign_on_presence),
        affinity_window=timedelta(seconds=settings.affinity_window_seconds),
        policy=settings.escalation_policy(),
        decline_cooldown=timedelta(seconds=settings.offer_decline_cooldown_seconds),
    )
    routing = routing_use_cases(kit.uow, kit.source, RoutingMetrics(kit.registry), config)
    sweeper_lease = kit.lease("queue-sweeper", ttl_seconds=max(10.0, 3 * settings.queue_sweep_interval_seconds))

    async def dispatcher() -> None:
        await routing.run_dispatcher(sweeper_lease, settings.queue_sweep_interval_seconds)

    stored = kit.uow.reads
    limits = settings.planning_limits()
    api = APIRouter()
    api.include_router(build_routes(routing.agents, routing.offers, routing.views, kit.require_api_key(), kit.needs))
    api.include_router(build_planning_routes(
        PlanningViews(kit.uow, limits), SimulationJobs(kit.uow, config, limits), kit.require_api_key(), kit.needs
    ))
    return kit.create_app(
        description="Assigns each ticket to the best available agent with the right skills, language and free "
        "capacity on its channel; keeps a priority queue, offers, escalation and presence.",
        api=api,
        prefetch=routing.tickets.prefetch,
        subscriptions=[
            Subscription(
                topics.TICKETS,
                {
                    TicketCreated: routing.tickets.on_ticket_created,
                    TicketPriorityChanged: routing.tickets.on_priority_changed,
                    TicketSolved: routing.tickets.on_solved,
                    TicketClosed: routing.tickets.on_closed,
                    TicketReopened: routing.tickets.on_reopened,
                },
            ),
            Subscription(topics.SLA, {SlaWarning: routing.tickets.on_sla_warning}),
            Subscription(topics.AGENTS, {AgentStatusChanged: routing.agents.on_agent_status_changed}),
        ],
        ensure_indexes=[stored.agents.ensure_indexes, stored.tickets.ensure_indexes, stored.tickets.seed_queue_depth,
                        stored.planning.ensure_indexes],
        background=[dispatcher],
        before_scrape=[routing.views.refresh_gauges],
    )

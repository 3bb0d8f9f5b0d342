"""Composition root: wires SLA's use cases to the platform kit.

The policy file is read and checked first, before anything connects: an invalid one stops the
service at start with the line and the reason. The timers and the policy reload share one lease: the
replica that fires the timers is the one that brings running clocks under a changed policy file.
"""

from fastapi import FastAPI

from services.sla.api import build_routes
from services.sla.domain import SlaRules
from services.sla.metrics import SlaMetrics
from services.sla.policy import load_policies
from services.sla.reload import PolicyReload
from services.sla.repository import SlaTransaction
from services.sla.service import Sla
from services.sla.settings import SlaSettings
from services.sla.timers import Timers, TimerSettings
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription


def build_app(settings: SlaSettings | None = None) -> FastAPI:
    settings = settings or SlaSettings()
    rules = SlaRules(load_policies(settings.sla_policies_path))
    kit = ServiceKit.create("sla", settings, transaction_type=SlaTransaction)
    metrics = SlaMetrics(kit.registry)
    lease = kit.lease("sla-timers", settings.sla_timer_lease_seconds)
    timers = Timers(
        kit.uow,
        rules,
        lease,
        metrics,
        kit.source,
        TimerSettings(
            horizon_seconds=settings.sla_scheduler_horizon_seconds,
            reload_seconds=settings.sla_scheduler_reload_seconds,
            max_loaded=settings.sla_scheduler_max_loaded,
            batch_size=settings.sla_scheduler_batch_size,
            lease_seconds=settings.sla_timer_lease_seconds,
        ),
    )
    sla = Sla(kit.uow, kit.source, rules, metrics, timers)
    reload = PolicyReload(kit.uow, sla, lease, settings.sla_policy_reload_batch_size, settings.sla_timer_lease_seconds)
    clocks = kit.uow.reads.clocks
    return kit.create_app(
        description="Runs the SLA clocks of every ticket, in business time, and warns before they breach.",
        api=build_routes(sla, kit.require_api_key(), kit.needs),
        subscriptions=[Subscription(topics.TICKETS, sla.handlers())],
        prefetch=sla.prefetch,
        ensure_indexes=[clocks.ensure_indexes, clocks.seed_live_count],
        background=[timers.run, reload.run],
    )

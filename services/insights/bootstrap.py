"""Composition root: wires insights' use cases to the platform kit.

A read model: it publishes nothing, and its fold is idempotent, so it keeps no inbox."""

from fastapi import FastAPI

from services.insights.api import build_routes
from services.insights.repository import InsightsTransaction
from services.insights.service import SUBSCRIBED, Insights
from services.insights.settings import InsightsSettings
from shared.app import ServiceKit
from shared.consumer import Subscription


def build_app(settings: InsightsSettings | None = None) -> FastAPI:
    settings = settings or InsightsSettings()
    kit = ServiceKit.create("insights", settings, transaction_type=InsightsTransaction)
    insights = Insights(kit.uow)
    return kit.create_app(
        description="Measures support from the event stream: SLA attainment, reply and resolution times, CSAT and "
        "NPS per agent, team, channel and day, the tickets behind each figure, and a live board.",
        api=build_routes(
            insights,
            kit.require_api_key(),
            kit.needs,
            max_range_days=settings.insights_max_range_days,
            default_range_days=settings.insights_default_range_days,
        ),
        subscriptions=[Subscription(topic, insights.handlers(topic)) for topic in SUBSCRIBED],
        prefetch=insights.prefetch,
        idempotent_handlers=True,
        ensure_indexes=[kit.uow.reads.facts.ensure_indexes],
    )

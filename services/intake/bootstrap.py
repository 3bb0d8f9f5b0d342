"""Composition root: wires intake's use cases to the platform kit."""

from datetime import timedelta

from fastapi import FastAPI
from prometheus_client import Counter

from services.intake.api import build_routes
from services.intake.domain import Ticket
from services.intake.repository import IntakeTransaction
from services.intake.service import Intake
from services.intake.settings import IntakeSettings
from services.intake.triage import build_triage
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription
from shared.events import (
    SlaBreached,
    SlaClockPaused,
    SlaClockResumed,
    SlaClockStarted,
    SlaFulfilled,
    SlaWarning,
    TicketAssigned,
    TicketSubmit,
    TicketUnassigned,
)

SLA_EVENTS = (SlaClockStarted, SlaClockPaused, SlaClockResumed, SlaWarning, SlaBreached, SlaFulfilled)


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    triage = build_triage(settings.triage_rules_path)  # an invalid rules file stops intake here, saying why
    kit = ServiceKit.create("intake", settings, transaction_type=IntakeTransaction)
    created = Counter(
        "switchboard_tickets_created_total",
        "Tickets opened, by channel and the priority triage (or the caller) gave them.",
        ["channel", "priority"],
        registry=kit.registry,
    )

    def count(ticket: Ticket) -> None:
        created.labels(channel=ticket.channel.value, priority=ticket.priority.value).inc()

    intake = Intake(
        kit.uow,
        kit.source,
        triage,
        reopen_window=timedelta(seconds=settings.reopen_window_seconds),
        on_created=count,
    )
    repositories = kit.uow.reads
    return kit.create_app(
        description="Takes tickets in from every channel, triages them, and owns them through their lifecycle.",
        api=build_routes(intake, repositories, settings, kit.require_api_key(), kit.needs),
        subscriptions=[
            Subscription(topics.INBOUND, {TicketSubmit: intake.on_submit_command}),
            Subscription(topics.ROUTING, {TicketAssigned: intake.on_assigned, TicketUnassigned: intake.on_unassigned}),
            Subscription(topics.SLA, {payload: intake.on_sla_event for payload in SLA_EVENTS}),
        ],
        ensure_indexes=[
            repositories.tickets.ensure_indexes,
            repositories.messages.ensure_indexes,
            repositories.customers.ensure_indexes,
            repositories.seen_signatures.ensure_indexes,
        ],
        housekeeping=[intake.close_solved, intake.purge_seen_signatures],
        prefetch=intake.prefetch,
    )

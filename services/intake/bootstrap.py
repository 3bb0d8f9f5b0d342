"""Composition root: wires intake's use cases to the platform kit."""

from fastapi import FastAPI

from services.intake.api import build_routes
from services.intake.repository import TicketRepository
from services.intake.service import Intake
from services.intake.settings import IntakeSettings
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription
from shared.events import TicketAssigned, TicketSubmit


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    kit = ServiceKit.create("intake", settings or IntakeSettings())
    intake = Intake(kit.uow, kit.source)
    tickets = TicketRepository(kit.db)
    return kit.create_app(
        description="Takes tickets in from every channel and owns them through their lifecycle.",
        api=build_routes(intake, tickets, kit.require_api_key()),
        subscriptions=[
            Subscription(topics.INBOUND, {TicketSubmit: intake.on_submit_command}),
            Subscription(topics.ROUTING, {TicketAssigned: intake.on_assigned}),
        ],
        ensure_indexes=[tickets.ensure_indexes],
    )

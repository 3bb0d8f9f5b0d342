"""Composition root: wires notify's use cases to the platform kit, the templates and the mail server.

Templates and SMTP_URL are checked here, before anything connects, so a broken one stops the
service at start-up with the reason instead of failing each message later.
"""

from datetime import timedelta

from fastapi import FastAPI

from services.notify.api import build_routes
from services.notify.domain import RetryPolicy
from services.notify.mailer import SmtpMailer, parse_smtp_url
from services.notify.repository import DeliveryRepository
from services.notify.service import Notifications
from services.notify.settings import NotifySettings
from services.notify.templates import Templates
from shared import topics
from shared.app import ServiceKit
from shared.consumer import Subscription
from shared.events import TicketCreated


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    templates = Templates()
    mailer = SmtpMailer(parse_smtp_url(settings.smtp_url.get_secret_value()), settings.mail_from)
    kit = ServiceKit.create("notify", settings)
    notifications = Notifications(
        kit.uow,
        kit.source,
        render=templates.render,
        mailer=mailer,
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base=timedelta(seconds=settings.delivery_retry_base_seconds),
        ),
        poll_interval_seconds=settings.sender_poll_interval_seconds,
    )
    deliveries = DeliveryRepository(kit.db)
    return kit.create_app(
        description="Tells people what they need to know about tickets: for now, the customer's acknowledgement.",
        api=build_routes(deliveries, kit.require_api_key()),
        subscriptions=[Subscription(topics.TICKETS, {TicketCreated: notifications.on_ticket_created})],
        ensure_indexes=[deliveries.ensure_indexes],
        background=[notifications.run_sender],
    )

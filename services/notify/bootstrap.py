"""Composition root: wires notify's use cases to the platform kit, the rules, the templates and the channels.

Rules, templates, SMTP_URL and the webhook and SMS URLs of the settings are checked here, before
anything connects, so a broken one stops the service at start-up with the reason instead of failing
each message later.
"""

import socket
from datetime import timedelta

from fastapi import FastAPI

from services.notify.api import build_routes
from services.notify.domain import DeliveryChannel, RetryPolicy
from services.notify.mailer import SmtpMailer, parse_smtp_url
from services.notify.planner import SAMPLE_CONTEXT, PlanConfig
from services.notify.repository import NotifyTransaction
from services.notify.rules import load_rules
from services.notify.service import Channels, Limits, Notifications, NotifyMetrics
from services.notify.settings import NotifySettings
from services.notify.templates import Templates
from services.notify.webhooks import SignedPoster, SmsSender, WebhookSender
from shared.app import ServiceKit
from shared.outbound import HostUnresolved, OutboundPolicy


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    rules = load_rules(settings.notify_rules_path)
    templates = Templates(settings.notify_templates_dir, kinds=rules.kinds)
    templates.check(SAMPLE_CONTEXT)
    mailer = SmtpMailer(parse_smtp_url(settings.smtp_url.get_secret_value()), settings.mail_from)
    outbound = OutboundPolicy(settings.allowlist())
    for setting in ("team_webhook_url", "supervisors_webhook_url", "sms_provider_url"):
        if url := getattr(settings, setting):
            try:
                outbound.check(url, setting.upper())
            except HostUnresolved:
                pass  # DNS may be down for a while: each send checks again
    poster = SignedPoster(settings.webhook_signing_key.get_secret_value(), outbound)
    kit = ServiceKit.create("notify", settings, transaction_type=NotifyTransaction)
    notifications = Notifications(
        kit.uow,
        kit.source,
        rules=rules,
        render=templates.render,
        channels=Channels(
            {
                DeliveryChannel.EMAIL: mailer,
                DeliveryChannel.WEBHOOK: WebhookSender(poster),
                DeliveryChannel.SMS: SmsSender(poster, settings.sms_provider_url),
            }
        ),
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base=timedelta(seconds=settings.delivery_retry_base_seconds),
            cap=timedelta(seconds=settings.delivery_retry_cap_seconds),
        ),
        poll_interval_seconds=settings.sender_poll_interval_seconds,
        config=PlanConfig(
            intake_public_url=settings.intake_public_url,
            csat_signing_key=settings.csat_signing_key.get_secret_value(),
            csat_link_ttl=timedelta(seconds=settings.csat_link_ttl_seconds),
            survey_kinds=templates.kinds_using("csat_links") | templates.kinds_using("nps_links"),
            nps_kinds=templates.kinds_using("nps_links"),
            team_webhook_url=settings.team_webhook_url,
            supervisors_webhook_url=settings.supervisors_webhook_url,
            max_event_age=timedelta(seconds=settings.max_event_age_seconds),
        ),
        metrics=NotifyMetrics(kit.registry),
        limits=Limits(
            rate_limit=settings.rate_limit_per_recipient,
            rate_window=timedelta(seconds=settings.rate_limit_window_seconds),
            claim_ttl=timedelta(seconds=settings.delivery_claim_seconds),
        ),
        dead_letters=kit.dead_letters,
        dead_letter_lease=kit.lease("notify-dead-letters", ttl_seconds=30),
        replica=f"{socket.gethostname()}:{settings.http_port}",
    )
    store = kit.uow.reads
    return kit.create_app(
        description="Tells customers, agents and supervisors what they need to know about tickets: "
        "by email, webhook or SMS, by the rules in its rules file.",
        api=build_routes(store, kit.require_api_key(), kit.needs, rules.kinds, outbound),
        subscriptions=notifications.subscriptions(),
        prefetch=notifications.prefetch,
        ensure_indexes=[store.deliveries.ensure_indexes],
        background=[notifications.run_sender],
        housekeeping=[notifications.look_for_dead_letters],
    )

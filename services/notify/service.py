"""Notify's use cases: decide what is owed inside the consumer's transaction; send it from a background loop.

Sending happens outside any transaction (a mail server is not part of one), between a claim and
the record of its outcome. A crash in between sends the mail again once the claim expires, with
the same Message-ID, so the receiving side can tell it is a repeat: handing mail to the server is
at-least-once, and exactly-once only in the absence of such a crash.
"""

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from services.notify.domain import (
    Delivery,
    DeliveryState,
    Render,
    RetryPolicy,
    SendFailure,
    acknowledgement,
    after_failure,
    sent,
)
from services.notify.repository import DeliveryRepository
from shared import topics
from shared.clock import to_ms, utc_now
from shared.envelope import Envelope, new_event
from shared.events import NotificationSent, TicketCreated
from shared.mongo import Transaction, UnitOfWork

log = logging.getLogger(__name__)

SEND_BATCH = 20
CLAIM_TTL = timedelta(minutes=2)
"""How long a replica holds what it claimed: far longer than a send may take (the mailer gives up after 30 s)."""


class Mailer(Protocol):
    async def send(self, delivery: Delivery) -> None:
        """Hand the delivery to the mail server; raise `SendFailure` unless it was accepted."""


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    failure: SendFailure | None
    finished_at: datetime


class Notifications:
    def __init__(
        self,
        uow: UnitOfWork,
        source: str,
        *,
        render: Render,
        mailer: Mailer,
        retry: RetryPolicy,
        poll_interval_seconds: float,
    ) -> None:
        self._uow = uow
        self._source = source
        self._render = render
        self._mailer = mailer
        self._retry = retry
        self._poll_interval = poll_interval_seconds

    async def on_ticket_created(self, tx: Transaction, event: Envelope[TicketCreated]) -> None:
        """Owe the customer one acknowledgement, due now; a replayed event finds it owed already."""
        delivery = acknowledgement(event, render=self._render, now=utc_now())
        if delivery is not None:
            await DeliveryRepository(tx.db, tx.session).add_if_absent(delivery)

    async def run_sender(self) -> None:
        """Forever; a full batch means more may be due, so it goes again without waiting."""
        while True:
            try:
                claimed = await self.send_due()
            except Exception:
                log.exception("sending notifications failed; retrying")
                claimed = 0
            if claimed < SEND_BATCH:
                await asyncio.sleep(self._poll_interval)

    async def send_due(self) -> int:
        """Claim what is due, send it, then record every outcome in one transaction; returns how many were claimed."""
        claimed = await self._uow.run(self._claim_due)
        if claimed:
            attempts = await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
            for delivery in await self._record_outcomes(attempts):
                _log_outcome(delivery)
        return len(claimed)

    async def _claim_due(self, tx: Transaction) -> list[Delivery]:
        deliveries = DeliveryRepository(tx.db, tx.session)
        now = utc_now()
        claimed: list[Delivery] = []
        while len(claimed) < SEND_BATCH:
            delivery = await deliveries.claim_due(to_ms(now), to_ms(now + CLAIM_TTL))
            if delivery is None:
                break
            claimed.append(delivery)
        return claimed

    async def _attempt(self, delivery: Delivery) -> Attempt:
        try:
            await self._mailer.send(delivery)
        except SendFailure as failure:
            return Attempt(delivery, failure, utc_now())
        return Attempt(delivery, None, utc_now())

    async def _record_outcomes(self, attempts: list[Attempt]) -> list[Delivery]:
        """Retried until it is stored: giving up would send these mails again when their claims expire."""
        while True:
            try:
                return await self._uow.run(lambda tx: self._record(tx, attempts))
            except Exception:
                log.exception("recording %d send outcomes failed; retrying", len(attempts))
                await asyncio.sleep(self._poll_interval)

    async def _record(self, tx: Transaction, attempts: list[Attempt]) -> list[Delivery]:
        """The outcomes this replica recorded; one another replica recorded first is left as it is."""
        deliveries = DeliveryRepository(tx.db, tx.session)
        recorded: list[Delivery] = []
        for attempt in attempts:
            if attempt.failure is None:
                delivery = sent(attempt.delivery, attempt.finished_at)
                if await deliveries.mark_sent(delivery):
                    tx.publish(topics.NOTIFICATIONS, self._sent_event(delivery))
                    recorded.append(delivery)
            else:
                delivery = after_failure(
                    attempt.delivery, attempt.failure, policy=self._retry, now=attempt.finished_at, jitter=random.random()
                )
                if await deliveries.record_failure(delivery):
                    recorded.append(delivery)
        return recorded

    def _sent_event(self, delivery: Delivery) -> Envelope:
        """Caused by the event that asked for the delivery, whose ids the delivery kept: that event is long gone."""
        event = new_event(
            NotificationSent(
                notification_id=delivery.id,
                ticket_id=delivery.ticket_id,
                kind=delivery.kind,
                channel=delivery.channel,
                sent_at=delivery.sent_at,
            ),
            source=self._source,
            subject=delivery.ticket_id,
        )
        return event.model_copy(update={"correlationid": delivery.correlation_id, "causationid": delivery.causation_id})


def _log_outcome(delivery: Delivery) -> None:
    """Ids and the redacted reason only: never an address or a body."""
    if delivery.state is DeliveryState.SENT:
        log.info("delivery %s sent (ticket %s)", delivery.id, delivery.ticket_id)
    else:
        log.warning(
            "delivery %s (ticket %s) attempt %d failed, %s: %s",
            delivery.id,
            delivery.ticket_id,
            delivery.attempts,
            "gave up" if delivery.state is DeliveryState.FAILED else "will retry",
            delivery.last_error,
        )

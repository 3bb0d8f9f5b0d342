"""Notify's use cases: decide what is owed inside the consumer's transaction; send it from a background loop.

Deciding: each consumed event updates notify's view of the ticket, then every matching rule owes each of
its audiences one delivery (pending, held, or suppressed with a reason), written with the inbox in the
consumer's transaction. Its `_id` is the deduplication key, so a redelivered event owes nothing new.
A batch's prefetch reads what its events need with one query per collection, and their writes go out
together when the batch is done.

Sending happens outside any transaction (a mail server is not part of one), between a claim and
the record of its outcome, written as soon as that one send returns (records ready at the same moment
share one transaction: `shared.group_commit`). A crash in between sends that
message again once the claim expires, with the same Message-ID (or `Idempotency-Key`), so the
receiving side can tell it is a repeat: handing a message over is at-least-once, and exactly-once
in the absence of such a crash.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from services.notify.domain import (
    Delivery,
    DeliveryChannel,
    DeliveryState,
    RecipientRole,
    Render,
    RetryPolicy,
    SendFailure,
    after_failure,
    customer_limit_key,
    delivery_key,
    describe_duration,
    digest_key,
    digest_window,
    sent,
)
from services.notify.planner import PlanConfig, Preferences, TicketView, fold_into_digest, plan, released, resolve
from services.notify.repository import CustomerLimits, NotifyTransaction, OwedDeliveries, TicketViews
from services.notify.rules import SUPPORTED_EVENTS, Rule, RuleBook
from shared import topics
from shared.clock import to_ms, utc_now
from shared.consumer import Subscription
from shared.dead_letters import DeadLetters
from shared.envelope import Envelope, new_event
from shared.events import (
    NotificationFailed,
    NotificationSent,
    NotificationSuppressed,
    SlaClockStarted,
    TicketAssigned,
    TicketCreated,
    TicketPriorityChanged,
    TicketUnassigned,
)
from shared.group_commit import GroupCommit
from shared.kafka_binding import CONTENT_TYPE, STRUCTURED_CONTENT_TYPE
from shared.mongo import Lease, UnitOfWork
from shared.wakeup import IdleBackoff, Wakeup

log = logging.getLogger(__name__)

SEND_BATCH = 20
DEAD_LETTER_BATCH = 50
IDLE_BACKOFF = 8
"""An idle sender looks again after one poll interval, then two, … up to this many (4 s by default). What
this replica plans wakes it at once, so only another replica's leftovers and scheduled retries wait."""
CONSUMER_GROUP = "switchboard-notify"


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> None:
        """Hand the delivery over; raise `SendFailure` unless it was accepted."""


class Channels:
    """Sends each delivery through the sender of its channel."""

    def __init__(self, senders: Mapping[DeliveryChannel, Sender]) -> None:
        self._senders = dict(senders)

    async def send(self, delivery: Delivery) -> None:
        sender = self._senders.get(delivery.channel)
        if sender is None:
            raise SendFailure(f"no sender for channel {delivery.channel}", permanent=True)
        await sender.send(delivery)


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "switchboard_notifications_total",
            "Notification outcomes: sent, failed (gave up) or suppressed (not sent on purpose).",
            ["kind", "channel", "outcome"],
            registry=registry,
        )

    def count(self, delivery: Delivery) -> None:
        outcome = {DeliveryState.SENT: "sent", DeliveryState.FAILED: "failed", DeliveryState.SUPPRESSED: "suppressed"}
        if delivery.state in outcome:
            self.notifications.labels(delivery.kind, delivery.channel.value, outcome[delivery.state]).inc()


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    failure: SendFailure | None
    finished_at: datetime


@dataclass(frozen=True)
class Limits:
    rate_limit: int = 10
    """Non-urgent messages per recipient per window before the rest go into one digest."""
    rate_window: timedelta = timedelta(hours=1)
    claim_ttl: timedelta = timedelta(minutes=2)
    """How long a replica holds what it claimed: far longer than a send may take (senders give up after 30 s)."""


class Notifications:
    def __init__(
        self,
        uow: UnitOfWork[NotifyTransaction],
        source: str,
        *,
        rules: RuleBook,
        render: Render,
        channels: Sender,
        retry: RetryPolicy,
        poll_interval_seconds: float,
        config: PlanConfig,
        metrics: NotifyMetrics,
        limits: Limits = Limits(),
        dead_letters: DeadLetters | None = None,
        dead_letter_lease: Lease | None = None,
        replica: str,
    ) -> None:
        self._uow = uow
        self._outcomes = GroupCommit(uow, prefetch=_load_deliveries)
        """The sender's transactions: the records of sends that returned while one was open, and the next
        claim, share the next one, which reads the records' deliveries in one query."""
        self._source = source
        self._rules = rules
        self._render = render
        self._channels = channels
        self._retry = retry
        self._poll_interval = poll_interval_seconds
        self._config = config
        self._metrics = metrics
        self._limits = limits
        self._dead_letters = dead_letters
        self._dead_letter_lease = dead_letter_lease
        self._replica = replica
        """Names this replica's claims; the same after a restart (host and port, not process id)."""
        self._sender_wakeup = Wakeup()
        self._dead_letters_owed = True
        """Whether a failed delivery may be waiting for the DLQ: at start, after this replica gives one up,
        and at each housekeeping round (for one that another replica gave up and died before parking)."""

    # --- deciding ------------------------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        by_topic: dict[str, dict] = {}
        for event_type in sorted(self._rules.event_types()):
            topic, payload = SUPPORTED_EVENTS[event_type]
            by_topic.setdefault(topic, {})[payload] = self.on_event
        return [Subscription(topic, handlers) for topic, handlers in sorted(by_topic.items())]

    async def prefetch(self, tx: NotifyTransaction, events: Sequence[Envelope]) -> None:
        """What the batch's events will read, one query per collection: their tickets, the customers'
        preferences, their once-per-customer periods and the agents' contacts, and which of the deliveries
        they may owe exist already."""
        await tx.tickets.load({event.data.ticket_id for event in events})
        views = {view.ticket_id: view for event in events if (view := await tx.tickets.get(event.data.ticket_id))}
        held = {
            delivery_id
            for event in events
            if isinstance(event.data, SlaClockStarted) and (view := views.get(event.data.ticket_id))
            for delivery_id in view.held
        }
        created = [event.data for event in events if isinstance(event.data, TicketCreated)]
        await tx.preferences.load(
            {view.customer_id for view in views.values() if view.customer_id} | {data.customer.id for data in created}
        )
        await tx.customer_limits.load(
            customer_limit_key(rule.kind, view.customer_id)
            for event in events
            if (view := views.get(event.data.ticket_id)) and view.customer_id
            for rule in self._rules.once_per_customer(event.type)
        )
        await tx.contacts.load(
            {view.assignee_id for view in views.values() if view.assignee_id}
            | {agent_id for event in events if (agent_id := getattr(event.data, "agent_id", None))}
        )
        await tx.owed.load(
            [
                delivery_key(event.id, role, rule.kind)
                for event in events
                for rule in self._rules.for_event(event.type)
                for role in RecipientRole
            ]
            + sorted(held)
        )

    async def on_event(self, tx: NotifyTransaction, event: Envelope) -> None:
        tx.on_commit(self._sender_wakeup.set)  # what the event makes due goes out now, not at the next poll
        now = utc_now()
        tickets, deliveries = tx.tickets, tx.owed
        ticket_id = event.data.ticket_id
        await self._track(tickets, event)
        ticket = await tickets.get(ticket_id)
        if kinds := self._rules.cancelled_by(event.type):
            for pending in await deliveries.pending_of_kinds(ticket_id, kinds):
                reason = f"cancelled by {event.type}"
                if await deliveries.suppress(pending, reason):
                    self._suppressed(tx, pending.model_copy(update={"state": DeliveryState.SUPPRESSED, "reason": reason}), now)
                    if (rule := self._rules.of_kind(pending.kind)) and rule.once_per_customer_seconds:
                        await tx.customer_limits.release(_limit_key(pending), pending.id)
        if isinstance(event.data, SlaClockStarted) and ticket is not None and self._awaited(event.data.metric):
            await self._release_awaiting(tx, ticket, f"sla:{event.data.metric}", now)
        rules = [rule for rule in self._rules.for_event(event.type) if rule.matches(event.data)]
        if not rules:
            return
        contacts = {}
        for agent_id in {getattr(event.data, "agent_id", None), ticket.assignee_id if ticket else None} - {None}:
            if contact := await tx.contacts.get(agent_id):
                contacts[agent_id] = contact
        preferences = await tx.preferences.get(ticket.customer_id if ticket else None)
        for rule in rules:
            for audience in rule.to:
                recipient = resolve(audience, event, ticket, contacts=contacts, preferences=preferences, config=self._config)
                delivery = plan(rule, recipient, event, ticket, preferences, render=self._render, now=now, config=self._config)
                if delivery.state is DeliveryState.PENDING and rule.once_per_customer_seconds:
                    delivery = await self._once_per_customer(tx.customer_limits, rule, delivery)
                if delivery.state is DeliveryState.PENDING and not rule.urgent:
                    delivery = await self._rate_limited(deliveries, delivery, preferences, now)
                if not await deliveries.add_if_absent(delivery):
                    continue
                if delivery.state is DeliveryState.SUPPRESSED:
                    self._suppressed(tx, delivery, now)
                elif delivery.awaiting:
                    held = (await tickets.get(ticket_id)).held
                    await tickets.update(ticket_id, {"held": [*held, delivery.id]})

    def _awaited(self, metric: str) -> bool:
        """Only a clock some rule holds messages for can release any."""
        return any(rule.wait_for_sla == metric for rule in self._rules.rules)

    async def _track(self, tickets: TicketViews, event: Envelope) -> None:
        data = event.data
        fields: dict = {}
        if isinstance(data, TicketCreated):
            fields = {
                "subject": data.subject,
                "priority": data.priority.value,
                "customer_id": data.customer.id,
                "customer_email": str(data.customer.email) if data.customer.email else None,
                "customer_name": data.customer.name,
                "language": data.language or data.customer.language,
                "timezone": data.customer.timezone,
            }
        elif isinstance(data, TicketAssigned):
            fields = {"assignee_id": data.agent_id}
        elif isinstance(data, TicketUnassigned):
            fields = {"assignee_id": None}
        elif isinstance(data, TicketPriorityChanged):
            fields = {"priority": data.priority.value}
        elif isinstance(data, SlaClockStarted) and data.metric == "first_reply":
            fields = {"first_reply_due_ms": to_ms(data.due_at), "first_reply_target_seconds": data.target_seconds}
        if fields:
            await tickets.update(data.ticket_id, fields)

    async def _release_awaiting(self, tx: NotifyTransaction, ticket: TicketView, awaiting: str, now: datetime) -> None:
        """The SLA clock a held message waited for started: it goes now, with the reply time."""
        if not ticket.held:
            return
        still_held = []
        for held in await tx.owed.held(ticket.held):
            if held.awaiting == awaiting:
                await tx.owed.replace_pending(released(held, ticket, render=self._render, now=now))
            else:
                still_held.append(held.id)
        await tx.tickets.update(ticket.ticket_id, {"held": still_held})

    @staticmethod
    async def _once_per_customer(limits: CustomerLimits, rule: Rule, delivery: Delivery) -> Delivery:
        """The delivery takes the customer's period of its kind, or is suppressed when another holds a period
        its due time falls in (sent, or still due: a survey planned a week ahead counts from then)."""
        period = rule.once_per_customer_seconds
        due_ms = to_ms(delivery.next_attempt_at)
        if await limits.take(_limit_key(delivery), delivery.id, due_ms=due_ms, until_ms=due_ms + int(period * 1000)):
            return delivery
        reason = f"at most one {rule.kind} per customer every {describe_duration(period)}: another is sent or due within that"
        return delivery.model_copy(update={"state": DeliveryState.SUPPRESSED, "reason": reason})

    async def _rate_limited(
        self, deliveries: OwedDeliveries, delivery: Delivery, preferences: Preferences | None, now: datetime
    ) -> Delivery:
        """Past the limit, the message is folded into the recipient's digest for this window instead."""
        since = now - self._limits.rate_window
        if await deliveries.count_recent(delivery.recipient, to_ms(since)) < self._limits.rate_limit:
            return delivery
        number, window_end = digest_window(now, self._limits.rate_window)
        key = digest_key(delivery.recipient_role, delivery.recipient, number)
        existing = await deliveries.get(key)
        digest = fold_into_digest(
            existing, delivery, key=key, window_end=window_end,
            quiet_hours=preferences.quiet_hours if preferences else None, render=self._render, now=now,
        )
        stored = await deliveries.add_if_absent(digest) if existing is None else await deliveries.replace_pending(digest)
        if not stored:
            return delivery  # that digest is already going out (or was just written by another): send this one alone
        return delivery.model_copy(
            update={
                "state": DeliveryState.SUPPRESSED,
                "reason": f"rate limit of {self._limits.rate_limit} reached: sent in digest {key}",
            }
        )

    def _suppressed(self, tx: NotifyTransaction, delivery: Delivery, now: datetime) -> None:
        tx.publish(
            topics.NOTIFICATIONS,
            self._caused_by(
                delivery,
                NotificationSuppressed(
                    notification_id=delivery.id,
                    ticket_id=delivery.ticket_id,
                    kind=delivery.kind,
                    channel=delivery.channel,
                    reason=delivery.reason or "suppressed",
                    suppressed_at=now,
                ),
            ),
        )
        self._metrics.count(delivery)
        log.info("delivery %s (ticket %s) suppressed: %s", delivery.id, delivery.ticket_id, delivery.reason)

    # --- sending -------------------------------------------------------------------------------

    async def run_sender(self) -> None:
        """Forever; a full batch means more may be due, so it goes again without waiting.

        It first takes back what this replica held when its previous process died, so a crash costs a
        restart, not the claim's whole lease. Stopped, it gives back what it holds, so the next sender
        (another replica, or this one started again elsewhere) need not wait for the lease either."""
        took_back = False
        backoff = IdleBackoff(self._poll_interval, IDLE_BACKOFF)
        try:
            while True:
                try:
                    if not took_back:
                        await self._release_claims("took back %d deliveries claimed before this replica restarted")
                        took_back = True
                    claimed = await self.send_due()
                    await self._relay_dead_letters_if_owed()
                except Exception:
                    log.exception("sending notifications failed; retrying")
                    claimed = 0
                wait = backoff.next_wait(found_work=claimed > 0)
                if claimed < SEND_BATCH:
                    await self._sender_wakeup.sleep(wait)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._release_claims("gave back %d claimed deliveries as it stopped")
            raise

    async def _release_claims(self, message: str) -> None:
        """Makes what this replica holds claimable again; logs `message` with how many, if any."""
        released = await self._uow.run(
            lambda tx: tx.deliveries.release_claims_of(self._replica)
        )
        if released:
            log.info(message, released)

    async def send_due(self) -> int:
        """Claim what is due (one transaction), then send each and record its outcome as soon as that send
        returns; returns how many were claimed, over as many rounds as found a full batch.

        The record is one conditional update of that delivery (with its event), so a crash repeats only
        the sends whose record had not landed yet: at most one repeat per delivery, never a whole batch.
        No record waits for another send; those that return while a record's transaction is open share
        the next one, instead of queueing one transaction each behind the database's lock, and that one
        reads their deliveries with one query and writes their updates with one command.
        An idle poll opens no transaction: one read outside any tells it nothing is due.
        """
        if not await self._uow.reads.deliveries.any_due(to_ms(utc_now())):
            return 0
        claimed = await self._outcomes.run(self._claim_due)
        total = 0
        while claimed:
            total += len(claimed)
            claimed = await self._send_round(claimed)
        return total

    async def _send_round(self, claimed: list[Delivery]) -> list[Delivery]:
        """Sends `claimed`, each recorded as it returns; the next batch, if this one was full.

        That claim waits for every send of this round to return, and so joins the transaction of the
        records still waiting: one turn of the lock for both, which under a consumer's backlog is the
        difference between one wait behind its batch and two. The next round's sends start only once
        all of this round's are recorded, so never more than SEND_BATCH are sent and unrecorded.
        """
        async with asyncio.TaskGroup() as group:
            attempts = [group.create_task(self._attempt(delivery)) for delivery in claimed]
            for attempt in attempts:
                group.create_task(self._record_when_sent(attempt))
            await asyncio.wait(attempts)
            return await self._claim_next() if len(claimed) == SEND_BATCH else []

    async def _claim_next(self) -> list[Delivery]:
        """A failed claim must not cancel the records in flight beside it: the next poll claims again."""
        try:
            return await self._outcomes.run(self._claim_due)
        except Exception:
            log.exception("claiming due deliveries failed; retrying at the next poll")
            return []

    async def _claim_due(self, tx: NotifyTransaction) -> list[Delivery]:
        now = utc_now()
        return await tx.deliveries.claim_due(
            to_ms(now), to_ms(now + self._limits.claim_ttl), SEND_BATCH, replica=self._replica
        )

    async def _record_when_sent(self, sending: Awaitable[Attempt]) -> None:
        if (recorded := await self._record_outcome(await sending)) is not None:
            self._metrics.count(recorded)
            _log_outcome(recorded)

    async def _attempt(self, delivery: Delivery) -> Attempt:
        try:
            await self._channels.send(delivery)
        except SendFailure as failure:
            return Attempt(delivery, failure, utc_now())
        except Exception as error:  # a sender's bug must not lose the claim's outcome
            log.exception("sending delivery %s raised", delivery.id)
            return Attempt(delivery, SendFailure(f"{type(error).__name__}", permanent=False), utc_now())
        return Attempt(delivery, None, utc_now())

    async def _record_outcome(self, attempt: Attempt) -> Delivery | None:
        """Retried until it is stored: giving up would send the message again when its claim expires."""
        while True:
            try:
                return await self._outcomes.run(lambda tx: self._record(tx, attempt), needs=attempt.delivery.id)
            except Exception:
                log.exception("recording the outcome of delivery %s failed; retrying", attempt.delivery.id)
                await asyncio.sleep(self._poll_interval)

    async def _record(self, tx: NotifyTransaction, attempt: Attempt) -> Delivery | None:
        """The outcome as recorded, or None when another replica recorded this delivery's first."""
        deliveries = tx.owed
        if attempt.failure is None:
            delivery = sent(attempt.delivery, attempt.finished_at)
            if not await deliveries.mark_sent(delivery):
                return None
            tx.publish(topics.NOTIFICATIONS, self._sent_event(delivery))
            return delivery
        delivery = after_failure(
            attempt.delivery, attempt.failure, policy=self._retry, now=attempt.finished_at, jitter=random.random()
        )
        failed = self._failed_event(delivery) if delivery.state is DeliveryState.FAILED else None
        if not await deliveries.record_failure(delivery, dead_letter=failed.to_json().decode() if failed else None):
            return None
        if failed is not None:
            tx.publish(topics.NOTIFICATIONS, failed)
            tx.on_commit(self._owe_dead_letters)
        return delivery

    def _owe_dead_letters(self) -> None:
        """The next sender round parks what failed for good: rounds do not look every time."""
        self._dead_letters_owed = True
        self._sender_wakeup.set()

    async def look_for_dead_letters(self) -> None:
        """Housekeeping: what another replica gave up, and died before parking, is parked too."""
        self._owe_dead_letters()

    async def _relay_dead_letters_if_owed(self) -> None:
        if not self._dead_letters_owed:
            return
        self._dead_letters_owed = False
        try:
            if await self.relay_dead_letters() == DEAD_LETTER_BATCH:
                self._dead_letters_owed = True  # more may be waiting
        except BaseException:
            self._dead_letters_owed = True
            raise

    async def relay_dead_letters(self) -> int:
        """Failed deliveries go to `support.notifications.v1.dlq` with the reason and attempts in headers.

        One replica at a time (a lease), so two do not dead-letter the same delivery twice. The record is
        the `notification.failed` event, so its original topic is notify's own: replaying it there with
        `shared.dlq_replay` is harmless (consumers drop the repeat by its id) and never puts a
        notification on a topic that carries tickets.
        """
        if self._dead_letters is None or not await self._uow.reads.deliveries.has_unpublished_dead_letters():
            return 0
        if self._dead_letter_lease is not None and not await self._dead_letter_lease.acquire():
            return 0
        rows = await self._uow.run(lambda tx: tx.deliveries.unpublished_dead_letters(DEAD_LETTER_BATCH))
        for row in rows:
            await self._dead_letters.park(
                row.value.encode(),
                topic=topics.NOTIFICATIONS,
                key=row.ticket_id.encode(),
                headers=[(CONTENT_TYPE, STRUCTURED_CONTENT_TYPE.encode())],
                error=row.error,
                consumer_group=CONSUMER_GROUP,
                attempts=row.attempts,
                details={"dlq-notification-id": row.delivery_id},
            )
            await self._uow.run(lambda tx, row=row: tx.deliveries.dead_letter_published(row.delivery_id))
        return len(rows)

    def _sent_event(self, delivery: Delivery) -> Envelope:
        return self._caused_by(
            delivery,
            NotificationSent(
                notification_id=delivery.id,
                ticket_id=delivery.ticket_id,
                kind=delivery.kind,
                channel=delivery.channel,
                sent_at=delivery.sent_at,
            ),
        )

    def _failed_event(self, delivery: Delivery) -> Envelope:
        return self._caused_by(
            delivery,
            NotificationFailed(
                notification_id=delivery.id,
                ticket_id=delivery.ticket_id,
                kind=delivery.kind,
                channel=delivery.channel,
                reason=delivery.last_error or "failed",
                attempts=delivery.attempts,
                failed_at=utc_now(),
            ),
        )

    def _caused_by(self, delivery: Delivery, payload) -> Envelope:
        """Caused by the event that asked for the delivery, whose ids the delivery kept: that event is long gone."""
        return new_event(
            payload,
            source=self._source,
            subject=delivery.ticket_id,
            correlation_id=delivery.correlation_id,
            causation_id=delivery.causation_id,
        )


async def _load_deliveries(tx: NotifyTransaction, delivery_ids: Sequence[str]) -> None:
    await tx.owed.load(delivery_ids)


def _limit_key(delivery: Delivery) -> str:
    """The customer by id, or by address when the ticket named no id."""
    return customer_limit_key(delivery.kind, delivery.recipient_id or delivery.recipient)


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

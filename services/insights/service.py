"""Insights use cases: fold events into ticket facts in the consumer's transaction, and read reports.

Every handler is the same: read the ticket's fact state (prefetched for the whole batch), fold the
event in (`domain.fold`), queue the new fact. Events about a ticket not yet seen created are kept
too: the fact waits, out of every report, until its `ticket.created` arrives from whichever topic.
"""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.insights import domain
from services.insights.repository import InsightsTransaction
from shared import topics
from shared.clock import now_ms
from shared.envelope import Envelope
from shared.events import (
    CustomerNpsReceived,
    NotificationSent,
    SlaBreached,
    SlaClockPaused,
    SlaClockResumed,
    SlaClockStarted,
    SlaFulfilled,
    SlaWarning,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketCsatReceived,
    TicketEscalated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketUnassigned,
)
from shared.mongo import UnitOfWork
from shared.mongo_filters import eq

SUBSCRIBED = {
    topics.TICKETS: (
        TicketCreated, TicketMessageAdded, TicketPriorityChanged, TicketSolved, TicketReopened, TicketClosed,
        TicketCsatReceived, CustomerNpsReceived,
    ),
    topics.ROUTING: (TicketAssigned, TicketUnassigned, TicketEscalated),
    topics.SLA: (SlaClockStarted, SlaClockPaused, SlaClockResumed, SlaWarning, SlaBreached, SlaFulfilled),
    topics.NOTIFICATIONS: (NotificationSent,),
}


@dataclass(frozen=True)
class Query:
    """A report's validated question: a time range (creation time, [from, to)) in a zone, and filters."""

    from_ms: int
    to_ms: int
    zone: ZoneInfo
    filters: dict

    def match(self, *, after: str | None = None, outcome: tuple[str, str] | None = None) -> dict:
        start = f"{self.from_ms:013d}"
        time_range = {"$gt": after} if after and after > start else {"$gte": start}  # a cursor never widens the range
        match = {
            **eq({domain.FILTERS[name]: value for name, value in self.filters.items()}),
            "sort_key": {**time_range, "$lt": f"{self.to_ms:013d}"},
        }
        if outcome is not None:
            metric, result = outcome
            match.update(eq({f"{metric}_outcome": result}))
        return match


class Insights:
    def __init__(self, uow: UnitOfWork[InsightsTransaction]) -> None:
        self._uow = uow

    # --- handlers -----------------------------------------------------------------------------

    async def prefetch(self, tx: InsightsTransaction, events: Sequence[Envelope]) -> None:
        await tx.facts.prefetch(ticket_of(event) for event in events if ticket_of(event))

    async def on_event(self, tx: InsightsTransaction, event: Envelope) -> None:
        ticket_id = ticket_of(event)
        if ticket_id is None:
            return  # an NPS answer about no ticket: nothing to attach it to (see the README)
        state = await tx.facts.state(ticket_id)
        folded = domain.fold(state, event.id, event.data)
        if folded != state:  # most events that change no report (an acknowledgement sent, a replay) write nothing
            tx.facts.save_later(ticket_id, folded)

    def handlers(self, topic: str) -> dict:
        return {payload: self.on_event for payload in SUBSCRIBED[topic]}

    # --- reports ------------------------------------------------------------------------------

    async def summary(self, query: Query, group_by: str | None, thresholds: list[int]) -> list[dict]:
        rows = await self._uow.reads.facts.summary(query.match(), group_by, thresholds)
        if group_by in domain.TIME_GROUPS:
            by_label: dict[str, list[dict]] = {}
            for row in rows:
                by_label.setdefault(domain.time_label(group_by, row["_id"], query.zone), []).append(row)
            labelled = [(label, domain.merge_rows(parts)) for label, parts in by_label.items()]
        else:
            labelled = [(None if row["_id"] is None else str(row["_id"]), row) for row in rows]
        groups = [{"group": label, **domain.figures(row, thresholds)} for label, row in labelled]
        return sorted(groups, key=lambda group: (group["group"] is None, group["group"] or ""))

    async def tickets(
        self, query: Query, outcome: tuple[str, str] | None, after: str | None, limit: int
    ) -> tuple[list[dict], str | None]:
        """A page of facts and the cursor of the next (None on the last page)."""
        facts = await self._uow.reads.facts.page(query.match(after=after, outcome=outcome), limit + 1)
        more = len(facts) > limit
        facts = facts[:limit]
        return [row(fact, query.zone) for fact in facts], facts[-1]["sort_key"] if more else None

    async def export(self, query: Query, outcome: tuple[str, str] | None) -> AsyncIterator[dict]:
        async for fact in self._uow.reads.facts.stream(query.match(outcome=outcome)):
            yield row(fact, query.zone)

    async def at_risk(self, filters: dict, zone: ZoneInfo, limit: int) -> list[dict]:
        facts = await self._uow.reads.facts.at_risk({domain.FILTERS[name]: value for name, value in filters.items()}, limit)
        now = now_ms()
        return [
            {
                "ticket_id": fact["_id"],
                "priority": fact["priority"],
                "channel": fact["channel"],
                "agent_id": fact["agent_id"],
                "policy": fact["policy"],
                "due_at": domain.local_iso(fact["at_risk_due_ms"], zone),
                "seconds_left": round((fact["at_risk_due_ms"] - now) / 1000),
                "metrics": [entry["metric"] for entry in fact["at_risk"]],
            }
            for fact in facts
        ]


def ticket_of(event: Envelope) -> str | None:
    return getattr(event.data, "ticket_id", None)


COLUMNS = (
    "ticket_id", "created_at", "channel", "priority", "category", "language", "customer_id", "tier", "team", "agent_id",
    "assignees", "first_assigned_at", "first_reply_at", "solved_at", "closed_at", "wait_seconds",
    "first_reply_seconds", "first_reply_business_seconds", "first_reply_outcome", "first_reply_policy",
    "resolution_seconds", "resolution_business_seconds", "resolution_outcome", "resolution_policy",
    "reopens", "reassignments", "escalations", "csat_score", "csat_comment", "nps_score",
)
"""The columns of the drill-down and of its CSV export, in order."""


def row(fact: dict, zone: ZoneInfo) -> dict:
    times = {
        "created_at": "created_ms", "first_assigned_at": "first_assigned_ms", "first_reply_at": "first_reply_ms",
        "solved_at": "solved_ms", "closed_at": "closed_ms",
    }
    values = {name: domain.local_iso(fact[field], zone) for name, field in times.items()}
    values["ticket_id"] = fact["_id"]
    values["assignees"] = [
        {
            "agent_id": entry["agent_id"],
            "assigned_at": domain.local_iso(entry["assigned_ms"], zone),
            "unassigned_at": domain.local_iso(entry["unassigned_ms"], zone),
        }
        for entry in fact["assignees"]
    ]
    return {column: values[column] if column in values else fact[column] for column in COLUMNS}

"""Insights' pure domain: one fact per ticket folded from events, and the figures reports make of facts.

A fact's `state` is what the events said, kept so that folding is order-independent and idempotent:
- each attribute set by several events is last-writer-wins by the event's own time (then its id), so
  whichever arrives last, the latest in time stays (`_later`);
- first/last instants are min/max;
- counts are the sizes of sets of event ids, so a replayed event (same id) never counts twice.
`fact_document` derives the flat, indexed fields the reports filter, group and sum on from `state`,
every time, so a fact is always what its events say, whatever their order between topics.
"""

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.clock import to_ms
from shared.events import (
    AuthorType,
    CustomerNpsReceived,
    NotificationSent,
    Payload,
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

METRICS = ("first_reply", "resolution")
"""The SLA metrics reports give attainment for."""
OUTCOMES = ("achieved", "breached", "running")
CSAT_SURVEY = "csat_survey"
NPS_SURVEY = "nps_survey"
"""notify's delivery kinds of the two surveys: a sent one is what a response rate divides by."""

# Where a clock stands after each kind of SLA event; at one instant the later step wins.
_CLOCK_STEP = {"started": 0, "resumed": 1, "paused": 1, "warning": 2, "breached": 3, "fulfilled": 4}


def new_state() -> dict:
    return {
        "created": None,
        "priority": None,
        "assignments": [],
        "unassignments": [],
        "first_agent_reply_ms": None,
        "solves": [],
        "reopens": [],
        "closed_ms": None,
        "escalations": [],
        "csat": None,
        "nps": None,
        "surveys": [],
        "clocks": {},
    }


def _later(current: list | None, candidate: list) -> list:
    """Last writer wins by [time, event id, ...]: the same answer whatever the order they come in."""
    return candidate if current is None or candidate[:2] > current[:2] else current


def _add_once(entries: list, entry: list) -> list:
    """A set of [event id, ...] entries kept as a list (MongoDB keys cannot be any string)."""
    return entries if any(existing[0] == entry[0] for existing in entries) else sorted([*entries, entry])


def _min(current: int | None, value: int) -> int:
    return value if current is None else min(current, value)


def _max(current: int | None, value: int) -> int:
    return value if current is None else max(current, value)


def fold(state: dict, event_id: str, data: Payload) -> dict:
    """`state` with the event applied; `state` itself is left as it was."""
    state = {**state}
    match data:
        case TicketCreated():
            created_ms = to_ms(data.created_at)
            state["created"] = {
                "ms": created_ms,
                "channel": data.channel.value,
                "category": data.category,
                "language": data.language or data.customer.language,
                "customer_id": data.customer.id,
                "tier": data.customer.tier.value if data.customer.tier else None,
            }
            state["priority"] = _later(state["priority"], [created_ms, event_id, data.priority.value])
        case TicketPriorityChanged():
            state["priority"] = _later(state["priority"], [to_ms(data.changed_at), event_id, data.priority.value])
        case TicketAssigned():
            state["assignments"] = _add_once(
                state["assignments"], [event_id, to_ms(data.assigned_at), data.agent_id, data.team]
            )
        case TicketUnassigned():
            state["unassignments"] = _add_once(
                state["unassignments"], [event_id, to_ms(data.unassigned_at), data.agent_id]
            )
        case TicketMessageAdded():
            if data.author_type is AuthorType.AGENT and data.public:
                state["first_agent_reply_ms"] = _min(state["first_agent_reply_ms"], to_ms(data.added_at))
        case TicketSolved():
            state["solves"] = _add_once(state["solves"], [event_id, to_ms(data.solved_at)])
        case TicketReopened():
            state["reopens"] = _add_once(state["reopens"], [event_id, to_ms(data.reopened_at)])
        case TicketClosed():
            state["closed_ms"] = _max(state["closed_ms"], to_ms(data.closed_at))
        case TicketEscalated():
            state["escalations"] = _add_once(state["escalations"], [event_id, to_ms(data.escalated_at)])
        case TicketCsatReceived():
            state["csat"] = _later(state["csat"], [to_ms(data.rated_at), event_id, data.score, data.comment])
        case CustomerNpsReceived():
            state["nps"] = _later(state["nps"], [to_ms(data.answered_at), event_id, data.score, data.comment])
        case NotificationSent() if data.kind in (CSAT_SURVEY, NPS_SURVEY):
            state["surveys"] = _add_once(state["surveys"], [data.notification_id, data.kind])
        case SlaClockStarted() | SlaClockPaused() | SlaClockResumed() | SlaWarning() | SlaBreached() | SlaFulfilled():
            state["clocks"] = {**state["clocks"], data.metric: _fold_clock(state["clocks"].get(data.metric), event_id, data)}
    return state


def _fold_clock(clock: dict | None, event_id: str, data: Payload) -> dict:
    clock = dict(
        clock or {"started_ms": None, "last": None, "due": None, "warned": False, "breached": False, "fulfilled": None}
    )
    match data:
        case SlaClockStarted():
            at, step = to_ms(data.started_at), "started"
            clock["started_ms"] = _min(clock["started_ms"], at)
            clock["due"] = _later(clock["due"], [at, event_id, to_ms(data.due_at)])
        case SlaClockResumed():
            at, step = to_ms(data.resumed_at), "resumed"
            clock["due"] = _later(clock["due"], [at, event_id, to_ms(data.due_at)])
        case SlaClockPaused():
            at, step = to_ms(data.paused_at), "paused"
        case SlaWarning():
            at, step = to_ms(data.warned_at), "warning"
            clock["warned"] = True
            clock["due"] = _later(clock["due"], [at, event_id, to_ms(data.due_at)])
        case SlaBreached():
            at, step = to_ms(data.breached_at), "breached"
            clock["breached"] = True
        case SlaFulfilled():
            at, step = to_ms(data.fulfilled_at), "fulfilled"
            clock["breached"] = clock["breached"] or data.breached
            clock["fulfilled"] = _later(clock["fulfilled"], [at, event_id, data.elapsed_seconds])
    # [time, step rank, event id, step, policy]: where the clock stands is its latest event in time.
    latest = [at, _CLOCK_STEP[step], event_id, step, data.policy]
    clock["last"] = latest if clock["last"] is None else max(clock["last"], latest)
    return clock


def _clock_outcome(clock: dict | None) -> str | None:
    if clock is None:
        return None
    if clock["breached"]:
        return "breached"
    return "achieved" if clock["last"][3] == "fulfilled" else "running"


def _seconds(start_ms: int | None, end_ms: int | None) -> float | None:
    return None if start_ms is None or end_ms is None else (end_ms - start_ms) / 1000


def sort_key(created_ms: int, ticket_id: str) -> str:
    """Creation time then ticket id, as one string: the time range and the drill-down's cursor in one index."""
    return f"{created_ms:013d}|{ticket_id}"


def fact_document(ticket_id: str, state: dict) -> dict:
    """The flat fields reports read (null where events have not told yet), all derived from `state`."""
    created = state["created"] or {}
    created_ms = created.get("ms")
    assignments = sorted(state["assignments"], key=lambda entry: (entry[1], entry[0]))
    unassigned = sorted(state["unassignments"], key=lambda entry: (entry[1], entry[0]))
    last_solved_ms = max((ms for _, ms in state["solves"]), default=None)
    last_reopened_ms = max((ms for _, ms in state["reopens"]), default=None)
    solved_ms = last_solved_ms if last_solved_ms is not None and (last_reopened_ms or 0) < last_solved_ms else None
    first_assigned_ms = assignments[0][1] if assignments else None
    clocks = state["clocks"]
    csat, nps = state["csat"], state["nps"]
    surveys = {kind for _, kind in state["surveys"]}
    document = {
        "_id": ticket_id,
        "sort_key": sort_key(created_ms, ticket_id) if created_ms is not None else None,
        "created_ms": created_ms,
        "created_quarter": created_ms // QUARTER_MS if created_ms is not None else None,
        "channel": created.get("channel"),
        "priority": state["priority"][2] if state["priority"] else None,
        "category": created.get("category"),
        "language": created.get("language"),
        "customer_id": created.get("customer_id"),
        "tier": created.get("tier"),
        "team": assignments[-1][3] if assignments else None,
        "agent_id": assignments[-1][2] if assignments else None,
        "assignees": [
            {
                "agent_id": agent_id,
                "assigned_ms": at,
                "unassigned_ms": next((ms for _, ms, who in unassigned if who == agent_id and ms >= at), None),
            }
            for _, at, agent_id, _team in assignments
        ],
        "first_assigned_ms": first_assigned_ms,
        "first_reply_ms": state["first_agent_reply_ms"],
        "solved_ms": solved_ms,
        "closed_ms": state["closed_ms"],
        "wait_seconds": _seconds(created_ms, first_assigned_ms),
        "assigned": int(first_assigned_ms is not None),
        "first_reply_seconds": _seconds(created_ms, state["first_agent_reply_ms"]),
        "resolution_seconds": _seconds(created_ms, solved_ms),
        "solved": int(solved_ms is not None),
        "ever_solved": int(bool(state["solves"])),
        "reopens": len(state["reopens"]),
        "reopened": int(bool(state["reopens"])),
        "reassignments": max(0, len(assignments) - 1),
        "escalations": len(state["escalations"]),
        "csat_score": csat[2] if csat else None,
        "csat_comment": csat[3] if csat else None,
        "csat_answered": int(csat is not None),
        "csat_surveyed": int(CSAT_SURVEY in surveys),
        "nps_score": nps[2] if nps else None,
        "nps_answered": int(nps is not None),
        "nps_promoter": int(nps is not None and nps[2] >= 9),
        "nps_detractor": int(nps is not None and nps[2] <= 6),
        "nps_surveyed": int(NPS_SURVEY in surveys),
        "policy": max((clock["last"] for clock in clocks.values()), default=[None] * 5)[4],
    }
    at_risk = []
    for metric in METRICS:
        clock = clocks.get(metric)
        outcome = _clock_outcome(clock)
        fulfilled = clock["fulfilled"] if clock else None
        document[f"{metric}_business_seconds"] = fulfilled[2] if fulfilled and outcome != "running" else None
        document[f"{metric}_outcome"] = outcome
        document[f"{metric}_policy"] = clock["last"][4] if clock else None
        for name in OUTCOMES:
            document[f"{metric}_{name}"] = int(outcome == name)
        if clock and clock["warned"] and clock["last"][3] not in ("fulfilled", "paused") and clock["due"]:
            at_risk.append({"metric": metric, "due_ms": clock["due"][2]})
    document["at_risk"] = at_risk
    document["at_risk_due_ms"] = min((entry["due_ms"] for entry in at_risk), default=None)
    return document


# --- report math --------------------------------------------------------------------------------

GROUPS = ("agent", "team", "channel", "priority", "category", "policy", "tier", "day", "week", "hour")
FILTERS = {
    "channel": "channel", "priority": "priority", "team": "team", "agent": "agent_id", "policy": "policy", "tier": "tier"
}
"""Query parameter -> fact field."""
DURATIONS = {
    "first_reply": ("first_reply_business_seconds", "first_reply_seconds"),
    "resolution": ("resolution_business_seconds", "resolution_seconds"),
}
TIME_GROUPS = ("day", "week", "hour")
DAY_MS = 86_400_000


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]


def _ratio(part: float, whole: float, scale: float = 1.0, digits: int = 4) -> float | None:
    return None if not whole else round(scale * part / whole, digits)


def figures(row: dict, thresholds: Sequence[int] = ()) -> dict:
    """One group's figures from its aggregation row (sums, means and the pushed durations)."""
    durations = {}
    for metric, fields in DURATIONS.items():
        durations[metric] = {}
        for kind, field in zip(("business", "calendar"), fields, strict=True):
            values = sorted(value for value in row[f"{field}_values"] if value is not None)
            durations[metric][kind] = {
                "p50": percentile(values, 0.5),
                "p90": percentile(values, 0.9),
                "mean": _ratio(row[f"{field}_total"], len(values), digits=3),
                "count": len(values),
            }
    sla = {}
    for metric in METRICS:
        achieved, breached, running = (row[f"{metric}_{outcome}"] for outcome in OUTCOMES)
        sla[metric] = {
            "achieved": achieved,
            "breached": breached,
            "running": running,
            "attainment_pct": _ratio(achieved, achieved + breached, 100),
        }
    answered = row["nps_answered"]
    result = {
        "created": row["created"],
        "solved": row["solved"],
        "first_reply": durations["first_reply"],
        "resolution": durations["resolution"],
        "sla": sla,
        "reopen_rate": _ratio(row["reopened"], row["ever_solved"]),
        "reopens": row["reopens"],
        "reassignments": row["reassignments"],
        "escalations": row["escalations"],
        "csat": {
            "mean": _ratio(row["csat_total"], row["csat_answered"], digits=3),
            "count": row["csat_answered"],
            "surveys_sent": row["csat_surveyed"],
            "response_rate": _ratio(row["csat_answered"], row["csat_surveyed"]),
        },
        "nps": {
            "score": _ratio(row["nps_promoter"] - row["nps_detractor"], answered, 100),
            "responses": answered,
            "promoters": row["nps_promoter"],
            "detractors": row["nps_detractor"],
            "surveys_sent": row["nps_surveyed"],
            "response_rate": _ratio(answered, row["nps_surveyed"]),
        },
    }
    if thresholds:
        result["split_by_wait_time"] = {
            str(limit): {"within": row.get(f"wait_within_{limit}", 0), "after": row["assigned"] - row.get(f"wait_within_{limit}", 0)}
            for limit in thresholds
        }
    return result


# --- time zones ----------------------------------------------------------------------------------

QUARTER_MS = 900_000
"""Facts are grouped in the database by the quarter hour of their creation (UTC): every zone's offset
is a whole number of quarter hours, so each quarter lies in one local day, week and hour of any zone,
and rolling quarters up into those (`time_label`) needs no date arithmetic in the database."""


def time_label(group_by: str, quarter: int, zone: ZoneInfo) -> str:
    """The local day, the Monday starting its week (both ISO dates), or the hour of day (`00`..`23`)."""
    local = datetime.fromtimestamp(quarter * QUARTER_MS / 1000, UTC).astimezone(zone)
    if group_by == "day":
        return local.date().isoformat()
    if group_by == "week":
        return (local.date() - timedelta(days=local.weekday())).isoformat()
    return f"{local.hour:02d}"


def merge_rows(rows: Iterable[dict]) -> dict:
    """One row from several (quarter hours into a day, say): every accumulator is a `$sum` or a `$push`."""
    merged: dict = {}
    for row in rows:
        for name, value in row.items():
            if name == "_id":
                continue
            if isinstance(value, list):
                merged.setdefault(name, []).extend(value)
            else:
                merged[name] = merged.get(name, 0) + (value or 0)
    return merged


def local_iso(ms: int | None, zone: ZoneInfo) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).isoformat()


def split_thresholds(text: str | None) -> list[int]:
    """`60,300,900` -> [60, 300, 900]; ValueError saying what is wrong."""
    if not text:
        return []
    try:
        limits = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError("split_by_wait_time must be comma-separated whole seconds, e.g. 60,300,900") from None
    if len(limits) > 10 or any(limit <= 0 for limit in limits) or limits != sorted(set(limits)):
        raise ValueError("split_by_wait_time takes up to 10 increasing positive thresholds in seconds")
    return limits


def row_fields() -> dict:
    """The `$group` accumulators of a summary row (besides `_id`): sums of fields and pushed fields only,
    which the embedded server computes without evaluating an expression per document. Means are sums
    divided by counts: its `$avg` counts nulls as zeros in a `$group` this size."""
    accumulators: dict = {"created": {"$sum": 1}}
    for field in (
        "solved", "ever_solved", "assigned", "reopened", "reopens", "reassignments", "escalations",
        "csat_answered", "csat_surveyed", "nps_answered", "nps_promoter", "nps_detractor", "nps_surveyed",
        *(f"{metric}_{outcome}" for metric in METRICS for outcome in OUTCOMES),
    ):
        accumulators[field] = {"$sum": f"${field}"}
    for fields in DURATIONS.values():
        for field in fields:
            accumulators[f"{field}_total"] = {"$sum": f"${field}"}
            accumulators[f"{field}_values"] = {"$push": f"${field}"}
    accumulators["csat_total"] = {"$sum": "$csat_score"}
    return accumulators

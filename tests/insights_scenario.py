"""A seeded week of ten tickets for insights' tests, with the figures it must give worked out by hand.

Created around New York's change to summer time (2025-03-09 02:00 local, 07:00 UTC), so grouping by
New York's days differs from UTC's on both sides of the change. Agent A has t1..t6 (t5 went to B
first), B has t7..t9, t10 is never assigned.

| ticket | created (UTC)    | NY day | agent | wait s | first reply: calendar/business, SLA | solved: calendar/business, SLA |
| t1     | 03-08 03:00      | 03-07  | A     |   30   | 7200/7000 breached                  | 20000/18000 achieved           |
| t2     | 03-08 14:00      | 03-08  | A     |   90   | 5400/5000 breached                  | 10000/9000 achieved            |
| t3     | 03-09 04:30      | 03-08  | A     |  200   | 4000/3900 breached                  | solved, reopened: running      |
| t4     | 03-09 06:30      | 03-09  | A     |  400   |  600/600 achieved                   |  8000/8000 achieved            |
| t5     | 03-09 07:30      | 03-09  | A(B)  | 1000   | 1200/1100 achieved                  |  3000/3000 achieved            |
| t6     | 03-10 03:30      | 03-09  | A     |   50   | running, warned (at risk)           | running                        |
| t7     | 03-10 04:30      | 03-10  | B     |   60   |  300/300 achieved                   |  5000/4000 achieved            |
| t8     | 03-10 15:00      | 03-10  | B     |  299   |  900/800 achieved                   | 40000/30000 breached           |
| t9     | 03-11 12:00      | 03-11  | B     |  901   | running                             | running                        |
| t10    | 03-11 20:00      | 03-11  | -     |   -    | running, warned (at risk)           | running                        |

CSAT 5 (t1), 4 (t2, which first said 1), 2 (t4); NPS 10 (t1), 9 (t2), 6 (t4), 3 (t5): NPS 0. Both
surveys were sent for t1, t2, t4, t5, t7 and t8.
"""

from datetime import UTC, datetime, timedelta

from shared import topics
from shared.envelope import Envelope, new_event
from shared.events import (
    AuthorType,
    Channel,
    Customer,
    CustomerNpsReceived,
    CustomerTier,
    NotificationSent,
    Priority,
    SlaBreached,
    SlaClockResumed,
    SlaClockStarted,
    SlaFulfilled,
    SlaWarning,
    TicketAssigned,
    TicketCreated,
    TicketCsatReceived,
    TicketEscalated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
)

FROM = "2025-03-07T00:00:00Z"
TO = "2025-03-12T00:00:00Z"
FIRST_REPLY_TARGET = 3600
RESOLUTION_TARGET = 36000

CREATED = {
    "t1": datetime(2025, 3, 8, 3, 0, tzinfo=UTC),
    "t2": datetime(2025, 3, 8, 14, 0, tzinfo=UTC),
    "t3": datetime(2025, 3, 9, 4, 30, tzinfo=UTC),
    "t4": datetime(2025, 3, 9, 6, 30, tzinfo=UTC),
    "t5": datetime(2025, 3, 9, 7, 30, tzinfo=UTC),
    "t6": datetime(2025, 3, 10, 3, 30, tzinfo=UTC),
    "t7": datetime(2025, 3, 10, 4, 30, tzinfo=UTC),
    "t8": datetime(2025, 3, 10, 15, 0, tzinfo=UTC),
    "t9": datetime(2025, 3, 11, 12, 0, tzinfo=UTC),
    "t10": datetime(2025, 3, 11, 20, 0, tzinfo=UTC),
}
WAIT = {"t1": 30, "t2": 90, "t3": 200, "t4": 400, "t5": 1000, "t6": 50, "t7": 60, "t8": 299, "t9": 901}
AGENT = {"t1": "A", "t2": "A", "t3": "A", "t4": "A", "t5": "A", "t6": "A", "t7": "B", "t8": "B", "t9": "B"}
TEAM = {"A": "red", "B": "blue"}
"""Each agent's team as routing names it on `ticket.assigned`: one agent per team, so a team's figures are its agent's."""
FIRST_REPLY = {"t1": (7200, 7000), "t2": (5400, 5000), "t3": (4000, 3900), "t4": (600, 600), "t5": (1200, 1100), "t7": (300, 300), "t8": (900, 800)}
RESOLUTION = {"t1": (20000, 18000), "t2": (10000, 9000), "t4": (8000, 8000), "t5": (3000, 3000), "t7": (5000, 4000), "t8": (40000, 30000)}
WARNED = ("t6", "t10")
CSAT = {"t1": 5, "t2": 4, "t4": 2}
NPS = {"t1": 10, "t2": 9, "t4": 6, "t5": 3}
SURVEYED = ("t1", "t2", "t4", "t5", "t7", "t8")

EXPECTED_TOTAL = {
    "created": 10,
    "solved": 6,
    "first_reply": {
        "business": {"p50": 1100.0, "p90": 7000.0, "mean": 2671.429, "count": 7},
        "calendar": {"p50": 1200.0, "p90": 7200.0, "mean": 2800.0, "count": 7},
    },
    "resolution": {
        "business": {"p50": 8000.0, "p90": 30000.0, "mean": 12000.0, "count": 6},
        "calendar": {"p50": 8000.0, "p90": 40000.0, "mean": 14333.333, "count": 6},
    },
    "sla": {
        "first_reply": {"achieved": 4, "breached": 3, "running": 3, "attainment_pct": 57.1429},
        "resolution": {"achieved": 5, "breached": 1, "running": 4, "attainment_pct": 83.3333},
    },
    "reopen_rate": 0.1429,
    "reopens": 1,
    "reassignments": 1,
    "escalations": 3,
    "csat": {"mean": 3.667, "count": 3, "surveys_sent": 6, "response_rate": 0.5},
    "nps": {"score": 0.0, "responses": 4, "promoters": 2, "detractors": 2, "surveys_sent": 6, "response_rate": 0.6667},
    "split_by_wait_time": {
        "60": {"within": 3, "after": 6},
        "300": {"within": 6, "after": 3},
        "900": {"within": 7, "after": 2},
    },
}
NEW_YORK_DAYS = {"2025-03-07": 1, "2025-03-08": 2, "2025-03-09": 3, "2025-03-10": 2, "2025-03-11": 2}
UTC_DAYS = {"2025-03-08": 2, "2025-03-09": 3, "2025-03-10": 3, "2025-03-11": 2}


def events(prefix: str) -> list[tuple[str, Envelope]]:
    """Every event of the scenario as (topic, event), tickets named `<prefix>-t1`..., grouped by ticket."""
    published: list[tuple[str, Envelope]] = []

    def emit(topic: str, payload, at: datetime) -> None:
        published.append((topic, new_event(payload, source="tests/insights", subject=payload.ticket_id, time=at)))

    for name, created in CREATED.items():
        ticket = f"{prefix}-{name}"
        number = int(name[1:])
        vip = name in ("t1", "t2")
        policy = "vip" if vip else "standard"
        later = lambda seconds, created=created: created + timedelta(seconds=seconds)  # noqa: E731
        emit(topics.TICKETS, TicketCreated(
            ticket_id=ticket,
            channel=Channel.EMAIL if number <= 4 else Channel.WEB,
            customer=Customer(id=f"{prefix}-c{number}", tier=CustomerTier.VIP if vip else CustomerTier.STANDARD),
            subject="help",
            priority=Priority.HIGH if number <= 5 else Priority.NORMAL,
            required_skills=[],
            created_at=created,
            language="en",
            category="billing" if number % 2 else "shipping",
        ), created)
        if name == "t8":
            emit(topics.TICKETS, TicketPriorityChanged(ticket_id=ticket, previous_priority=Priority.NORMAL, priority=Priority.URGENT, changed_at=later(100)), later(100))
        if name == "t5":
            emit(topics.ROUTING, TicketAssigned(ticket_id=ticket, agent_id=f"{prefix}-B", reason="first", assigned_at=later(1000), team=f"{prefix}-{TEAM['B']}"), later(1000))
            emit(topics.ROUTING, TicketAssigned(ticket_id=ticket, agent_id=f"{prefix}-A", reason="moved", assigned_at=later(1100), team=f"{prefix}-{TEAM['A']}"), later(1100))
        elif name in AGENT:
            emit(topics.ROUTING, TicketAssigned(ticket_id=ticket, agent_id=f"{prefix}-{AGENT[name]}", reason="best", assigned_at=later(WAIT[name]), team=f"{prefix}-{TEAM[AGENT[name]]}"), later(WAIT[name]))
        escalations = {"t9": 2, "t10": 1}.get(name, 0)
        for step in range(1, escalations + 1):
            emit(topics.ROUTING, TicketEscalated(ticket_id=ticket, step=step, action="widen_to_l2", description="waited", escalated_at=later(1200 * step)), later(1200 * step))

        clock = {"ticket_id": ticket, "policy": policy}
        emit(topics.SLA, SlaClockStarted(**clock, metric="first_reply", target_seconds=FIRST_REPLY_TARGET, started_at=created, due_at=later(FIRST_REPLY_TARGET)), created)
        emit(topics.SLA, SlaClockStarted(**clock, metric="resolution", target_seconds=RESOLUTION_TARGET, started_at=created, due_at=later(RESOLUTION_TARGET)), created)
        if name in FIRST_REPLY:
            calendar, business = FIRST_REPLY[name]
            emit(topics.TICKETS, TicketMessageAdded(ticket_id=ticket, message_id=f"{ticket}-m0", author_type=AuthorType.AGENT, author_id="x", public=False, body="note", added_at=later(calendar - 100)), later(calendar - 100))
            emit(topics.TICKETS, TicketMessageAdded(ticket_id=ticket, message_id=f"{ticket}-m1", author_type=AuthorType.AGENT, author_id="x", public=True, body="hi", added_at=later(calendar)), later(calendar))
            emit(topics.TICKETS, TicketMessageAdded(ticket_id=ticket, message_id=f"{ticket}-m2", author_type=AuthorType.AGENT, author_id="x", public=True, body="more", added_at=later(calendar + 50)), later(calendar + 50))
            breached = business > FIRST_REPLY_TARGET
            if breached:
                emit(topics.SLA, SlaBreached(**clock, metric="first_reply", target_seconds=FIRST_REPLY_TARGET, due_at=later(FIRST_REPLY_TARGET), breached_at=later(FIRST_REPLY_TARGET)), later(FIRST_REPLY_TARGET))
            emit(topics.SLA, SlaFulfilled(**clock, metric="first_reply", target_seconds=FIRST_REPLY_TARGET, elapsed_seconds=business, breached=breached, fulfilled_at=later(calendar)), later(calendar))
        if name in WARNED:
            emit(topics.SLA, SlaWarning(**clock, metric="first_reply", target_seconds=FIRST_REPLY_TARGET, threshold=0.75, due_at=later(FIRST_REPLY_TARGET), remaining_seconds=900, warned_at=later(2700)), later(2700))
        if name in RESOLUTION:
            calendar, business = RESOLUTION[name]
            emit(topics.TICKETS, TicketSolved(ticket_id=ticket, solved_at=later(calendar)), later(calendar))
            emit(topics.SLA, SlaFulfilled(**clock, metric="resolution", target_seconds=RESOLUTION_TARGET, elapsed_seconds=business, breached=business > 20000, fulfilled_at=later(calendar)), later(calendar))
            if business > 20000:
                emit(topics.SLA, SlaBreached(**clock, metric="resolution", target_seconds=RESOLUTION_TARGET, due_at=later(RESOLUTION_TARGET), breached_at=later(RESOLUTION_TARGET)), later(RESOLUTION_TARGET))
        if name == "t3":
            emit(topics.TICKETS, TicketSolved(ticket_id=ticket, solved_at=later(6000)), later(6000))
            emit(topics.SLA, SlaFulfilled(**clock, metric="resolution", target_seconds=RESOLUTION_TARGET, elapsed_seconds=6000, breached=False, fulfilled_at=later(6000)), later(6000))
            emit(topics.TICKETS, TicketReopened(ticket_id=ticket, reopened_at=later(7000)), later(7000))
            emit(topics.SLA, SlaClockResumed(**clock, metric="resolution", target_seconds=RESOLUTION_TARGET, resumed_at=later(7000), due_at=later(RESOLUTION_TARGET + 1000)), later(7000))
        if name in SURVEYED:
            for kind in ("csat_survey", "nps_survey"):
                emit(topics.NOTIFICATIONS, NotificationSent(notification_id=f"{ticket}-{kind}", ticket_id=ticket, kind=kind, channel="email", sent_at=later(50000)), later(50000))
        if name == "t2":
            emit(topics.TICKETS, TicketCsatReceived(ticket_id=ticket, score=1, rated_at=later(60000)), later(60000))
        if name in CSAT:
            emit(topics.TICKETS, TicketCsatReceived(ticket_id=ticket, score=CSAT[name], comment=f"said {CSAT[name]}", rated_at=later(61000)), later(61000))
        if name in NPS:
            emit(topics.TICKETS, CustomerNpsReceived(survey_id=f"{ticket}-nps", customer_id=f"{prefix}-c{number}", ticket_id=ticket, score=NPS[name], answered_at=later(700000)), later(700000))
    return published

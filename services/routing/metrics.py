"""Routing's own metrics, on the service's registry. Labels are bounded: priorities, outcomes, modes, actions."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.events import Priority

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "switchboard_queue_depth", "Tickets waiting for an agent, by priority.", ["priority"], registry=registry
        )
        for priority in Priority:
            self.queue_depth.labels(priority=priority.value).set(0)
        self.queue_wait = Histogram(
            "switchboard_queue_wait_seconds",
            "Time from a ticket's creation to its assignment (the routing SLO signal).",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.offers = Counter(
            "switchboard_offers_total", "Offers answered, by outcome: accepted, rejected or expired.", ["outcome"],
            registry=registry,
        )
        self.assignments = Counter(
            "switchboard_assignments_total",
            "Tickets assigned, by mode: auto, offer (an accepted offer) or reopened (back to the previous agent).",
            ["mode"],
            registry=registry,
        )
        self.unassignments = Counter(
            "switchboard_unassignments_total", "Tickets sent back to the queue because their agent left.",
            registry=registry,
        )
        self.stale_presence_events = Counter(
            "switchboard_stale_presence_events_total",
            "Agent status events acknowledged but ignored: not newer than the presence in force (delayed, replayed, "
            "or overtaken by a PUT/PATCH).",
            registry=registry,
        )
        self.escalations = Counter(
            "switchboard_escalations_total", "Escalation steps applied, by action.", ["action"], registry=registry
        )

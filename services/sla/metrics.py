"""SLA's own metrics, on the service's registry. Labels are bounded: metric, priority, outcome."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.events import Payload, SlaBreached, SlaFulfilled, SlaWarning


class SlaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaches = Counter(
            "switchboard_sla_breaches_total",
            "SLA clocks that used up their target, by metric and ticket priority.",
            ["metric", "priority"],
            registry=registry,
        )
        self.fulfilled = Counter(
            "switchboard_sla_fulfilled_total",
            "SLA clocks fulfilled, by outcome: met or breached. Attainment = met / (met + breached).",
            ["metric", "priority", "outcome"],
            registry=registry,
        )
        self.warnings = Counter(
            "switchboard_sla_warnings_total",
            "Pre-breach warnings sent, by metric.",
            ["metric"],
            registry=registry,
        )
        self.timer_lateness = Histogram(
            "switchboard_sla_timer_lateness_seconds",
            "How long after its due instant a warning or breach was committed with its event.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.live_clocks = Gauge(
            "switchboard_sla_live_clocks",
            "SLA clocks not fulfilled yet (running, paused or breached).",
            registry=registry,
        )

    def count(self, event: Payload | None, priority: str = "unknown") -> None:
        """Counts an SLA event this service committed."""
        if isinstance(event, SlaBreached):
            self.breaches.labels(metric=event.metric, priority=priority).inc()
        elif isinstance(event, SlaWarning):
            self.warnings.labels(metric=event.metric).inc()
        elif isinstance(event, SlaFulfilled):
            outcome = "breached" if event.breached else "met"
            self.fulfilled.labels(metric=event.metric, priority=priority, outcome=outcome).inc()

"""Metrics every service exposes, on the service's own registry.

Conventions: base units, `_total` on counters, and only bounded label values (topics, event
types, routes, outcomes), never ids or addresses.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pymongo import monitoring


class PlatformMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_published = Counter(
            "switchboard_events_published_total",
            "Events relayed from the outbox to Kafka.",
            ["topic", "type"],
            registry=registry,
        )
        self.events_consumed = Counter(
            "switchboard_events_consumed_total",
            "Events taken from Kafka, by outcome: processed, duplicate (already in the inbox) or ignored.",
            ["topic", "type", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "switchboard_dead_letters_total",
            "Messages sent to a dead-letter topic, by reason: invalid, rejected or failed.",
            ["topic", "consumer_group", "reason"],
            registry=registry,
        )
        self.outbox_lag = Gauge(
            "switchboard_outbox_lag_seconds",
            "Age of the oldest outbox event not yet published (0 when the outbox is drained).",
            registry=registry,
        )
        self.http_requests = Counter(
            "switchboard_http_requests_total",
            "HTTP requests, by route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "switchboard_consumer_lag_messages",
            "Messages on a topic not yet consumed by this service's consumer group (end offset minus committed "
            "offset, summed over partitions). Every replica reports its group's lag: aggregate with max, not sum.",
            ["topic"],
            registry=registry,
        )
        self.dead_letter_topic_messages = Gauge(
            "switchboard_dead_letter_topic_messages",
            "Messages held in a dead-letter topic this service writes to (end minus beginning offset, summed over "
            "partitions). Several services may report the same topic: aggregate with max.",
            ["topic"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "switchboard_http_request_duration_seconds",
            "HTTP request latency, by route template.",
            ["method", "route"],
            registry=registry,
        )
        self.mongodb_commands = Counter(
            "switchboard_mongodb_commands_total",
            "MongoDB commands sent, by command and collection: each is a round trip, the main cost of a unit of work.",
            ["command", "collection"],
            registry=registry,
        )


class MongoCommandCounter(monitoring.CommandListener):
    """Counts every command a MongoDB client starts into `switchboard_mongodb_commands_total`."""

    def __init__(self, metrics: PlatformMetrics) -> None:
        self._commands = metrics.mongodb_commands

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get("collection" if event.command_name == "getMore" else event.command_name)
        self._commands.labels(event.command_name, target if isinstance(target, str) else "").inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

"""Structured logs, correlation ids, opt-in tracing and the consumer-lag measurement, without I/O."""

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import ClassVar

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from shared import tracing
from shared.consumer import ConsumerLagMonitor, EventConsumer, Subscription
from shared.envelope import new_event
from shared.events import Payload
from shared.logging import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    correlated,
    correlation_id,
    safe_correlation_id,
)
from shared.metrics import PlatformMetrics


def log_line(formatter: logging.Formatter, message: str, *args, exc_info=None, **extra) -> str:
    record = logging.LogRecord("switchboard.test", logging.WARNING, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    return formatter.format(record)


def test_a_json_line_has_time_level_service_logger_and_message():
    line = json.loads(log_line(JsonFormatter("routing"), "assigned %s to %s", "t-1", "ada"))
    assert line["level"] == "WARNING" and line["service"] == "routing" and line["logger"] == "switchboard.test"
    assert line["message"] == "assigned t-1 to ada"
    assert line["time"].endswith("+00:00")
    assert "correlation_id" not in line


def test_the_correlation_id_of_the_work_in_hand_is_on_every_line():
    with correlated("corr-42"):
        line = json.loads(log_line(JsonFormatter("sla"), "clock started"))
        assert "correlation_id=corr-42" in log_line(TextFormatter(), "clock started")
    assert line["correlation_id"] == "corr-42"
    assert correlation_id.get() is None


def test_faststream_context_fields_are_kept():
    line = json.loads(log_line(JsonFormatter("sla"), "Received", topic="support.tickets.v1", group_id="switchboard-sla"))
    assert line["topic"] == "support.tickets.v1" and line["group_id"] == "switchboard-sla"


def test_email_addresses_never_reach_a_log_line():
    try:
        raise ValueError("customer ann.lee+x@example.co.uk is unknown")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    text = log_line(JsonFormatter("intake"), "mail to %s failed", "bob@example.com", exc_info=exc_info)
    assert "@example" not in text
    line = json.loads(text)
    assert line["message"] == "mail to <email> failed" and "<email>" in line["exception"]
    assert "@example" not in log_line(TextFormatter(), "to %s", "bob@example.com")


@pytest.mark.parametrize(
    "offered,kept",
    [("a1b2-c3", "a1b2-c3"), ("f" * 128, "f" * 128), ("f" * 129, None), ("ann@example.com", None),
     ("two words", None), ("", None), (None, None)],
)
def test_a_correlation_id_from_a_request_header_is_kept_only_if_it_looks_like_an_id(offered, kept):
    assert safe_correlation_id(offered) == kept


def test_configure_logging_sends_every_logger_through_one_json_handler(capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("notify", level="INFO", fmt="json")
        logging.getLogger("uvicorn.error").warning("port in use")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["service"] == "notify" and line["logger"] == "uvicorn.error" and line["message"] == "port in use"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_tracing_is_off_unless_an_otlp_endpoint_is_configured():
    assert not tracing.tracing_enabled({})
    assert tracing.kafka_middlewares("intake", {}) == ([], None)
    assert tracing.tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_tracing_on_adds_faststreams_middleware_with_the_service_name(protocol):
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    middlewares, provider = tracing.kafka_middlewares("routing", environ)
    try:
        assert len(middlewares) == 1 and isinstance(middlewares[0], KafkaTelemetryMiddleware)
        assert provider.resource.attributes["service.name"] == "switchboard-routing"
    finally:
        provider.shutdown()


class Ping(Payload):
    EVENT_TYPE: ClassVar[str] = "test.ping.v1"


class FakeInbox:
    async def unseen(self, transaction, group, events):
        return list(events)


async def test_a_handler_runs_with_its_events_correlation_id():
    seen = []

    async def handler(transaction, event):
        seen.append(correlation_id.get())
        logging.getLogger("test").info("handled")

    consumer = EventConsumer(
        [Subscription("support.test.v1", {Ping: handler})],
        group="switchboard-test", uow=None, inbox=FakeInbox(), broker=None, dead_letters=None,
        metrics=PlatformMetrics(CollectorRegistry()), max_attempts=1, backoff_seconds=0,
    )
    cause = new_event(Ping(), source="switchboard/test", subject="t-1")
    event = new_event(Ping(), source="switchboard/test", subject="t-1", cause=cause)
    record = SimpleNamespace(topic="support.test.v1")
    await consumer._apply(SimpleNamespace(session=None), [(record, event)])
    assert seen == [cause.correlationid]
    assert correlation_id.get() is None


class FakeOffsets:
    """Two topics of 2 partitions; the DLQ of the first holds 3 messages."""

    END = {("a", 0): 10, ("a", 1): 5, ("b", 0): 7, ("b", 1): 0, ("a.dlq", 0): 3, ("a.dlq", 1): 0,
           ("b.dlq", 0): 0, ("b.dlq", 1): 0}
    BEGINNING = {("a", 0): 0, ("a", 1): 2, ("b", 0): 0, ("b", 1): 0, ("a.dlq", 0): 0, ("a.dlq", 1): 0,
                 ("b.dlq", 0): 0, ("b.dlq", 1): 0}

    async def topics(self):
        return {"a", "b", "a.dlq", "b.dlq"}

    def partitions_for_topic(self, topic):
        return {0, 1}

    async def end_offsets(self, partitions):
        return {tp: self.END[tp.topic, tp.partition] for tp in partitions}

    # Fetching from just before the end learns the same end: this broker reports it right.
    def assign(self, partitions):
        self.assigned = list(partitions)

    def seek(self, tp, offset):
        pass

    async def getmany(self, *partitions, timeout_ms, max_records):
        return {}

    def highwater(self, tp):
        assert tp in self.assigned, "aiokafka raises for a partition it was not assigned"
        return self.END[tp.topic, tp.partition]

    async def beginning_offsets(self, partitions):
        return {tp: self.BEGINNING[tp.topic, tp.partition] for tp in partitions}


class FakeAdmin:
    def __init__(self):
        self.asked = None

    async def list_consumer_group_offsets(self, group, partitions=None):
        self.asked = (group, sorted(partitions))
        # a/0 committed at 8, a/1 never committed (-1), b/0 committed at the end, b/1 absent.
        return {TopicPartition("a", 0): OffsetAndMetadata(8, ""), TopicPartition("a", 1): OffsetAndMetadata(-1, ""),
                TopicPartition("b", 0): OffsetAndMetadata(7, "")}


async def test_consumer_lag_is_end_minus_committed_summed_over_partitions():
    registry = CollectorRegistry()
    metrics = PlatformMetrics(registry)
    admin = FakeAdmin()
    monitor = ConsumerLagMonitor("unused:9092", "switchboard-x", ["a", "b"], metrics, interval_seconds=60)
    lags = await monitor.measure(admin, FakeOffsets())
    # a: (10 - 8) + (5 - 2, from its beginning) = 5; b: 0 + 0.
    assert lags == {"a": 5, "b": 0}
    assert registry.get_sample_value("switchboard_consumer_lag_messages", {"topic": "a"}) == 5
    assert registry.get_sample_value("switchboard_dead_letter_topic_messages", {"topic": "a.dlq"}) == 3
    assert registry.get_sample_value("switchboard_dead_letter_topic_messages", {"topic": "b.dlq"}) == 0
    # Only the group's own topics are asked for, by partition (the embedded broker needs that).
    assert admin.asked[0] == "switchboard-x" and {tp.topic for tp in admin.asked[1]} == {"a", "b"}


async def test_lag_is_measured_when_metrics_are_read_at_most_once_an_interval(monkeypatch):
    registry = CollectorRegistry()
    monitor = ConsumerLagMonitor("unused:9092", "switchboard-x", ["a", "b"], PlatformMetrics(registry), interval_seconds=60)
    connections = []

    async def connect():
        connections.append(1)
        return FakeAdmin(), FakeOffsets()

    monkeypatch.setattr(monitor, "_connect", connect)
    assert registry.get_sample_value("switchboard_consumer_lag_messages", {"topic": "a"}) is None  # nothing yet

    await monitor.refresh()
    monkeypatch.setitem(FakeOffsets.END, ("a", 0), 110)  # more arrives, but the next read is within the interval
    await monitor.refresh()

    assert registry.get_sample_value("switchboard_consumer_lag_messages", {"topic": "a"}) == 5
    assert connections == [1], "the connections are kept between measurements"


async def test_the_lag_monitor_survives_an_unreachable_broker_and_tries_again_later():
    monitor = ConsumerLagMonitor("127.0.0.1:1", "g", ["a"], PlatformMetrics(CollectorRegistry()), interval_seconds=0.05)
    await monitor.refresh()  # logged, not raised: the scrape still gets every other metric
    await asyncio.sleep(0.1)
    await monitor.refresh()
    await monitor.close()


async def test_with_an_otlp_endpoint_a_services_messages_are_exported_as_spans(monkeypatch):
    """End to end inside one process: ServiceKit's broker, FastStream's test broker, a local OTLP sink."""
    import http.server
    import threading

    from faststream.kafka import TestKafkaBroker

    from shared.app import ServiceKit
    from shared.settings import ServiceSettings

    received = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    kit = ServiceKit.create("tracetest", ServiceSettings(mongodb_database="unused", http_port=8999))
    try:
        assert kit.tracer_provider is not None

        @kit.broker.subscriber("support.trace.v1", group_id="g")
        async def handle(body: dict) -> None:
            pass

        async with TestKafkaBroker(kit.broker) as broker:
            await broker.publish({"hello": "world"}, "support.trace.v1")
        assert kit.tracer_provider.force_flush(10_000)
        assert [path for path, _ in received] and all(path == "/v1/traces" for path, _ in received)
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        spans = [
            (resource.resource, span.name)
            for _, body in received
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        names = {name for _, name in spans}
        assert {"support.trace.v1 publish", "support.trace.v1 process"} <= names, names
        services = {a.value.string_value for r, _ in spans for a in r.attributes if a.key == "service.name"}
        assert services == {"switchboard-tracetest"}
    finally:
        kit.tracer_provider and kit.tracer_provider.shutdown()
        server.shutdown()
        await kit.mongo.close()

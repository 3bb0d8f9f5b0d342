"""OpenTelemetry tracing, opt-in: on when an OTLP endpoint is configured, off (and free) otherwise.

The standard OpenTelemetry variables configure it, so any collector works unchanged:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on,
`OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (default) or `grpc`, `OTEL_SERVICE_NAME`
overrides the service name (`switchboard-<service>`), `OTEL_TRACES_SAMPLER(_ARG)` sample.
`OTEL_SDK_DISABLED=true` turns it off again.

Spans come from FastStream's `KafkaTelemetryMiddleware`: one per published and per consumed
message, with the trace context carried in Kafka headers, so a ticket's path through intake,
routing, sla and notify is one trace.
"""

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def tracer_provider(service: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """A provider exporting spans over OTLP, or None when tracing is not configured."""
    if not tracing_enabled(environ):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    resource = Resource.create(
        {"service.name": environ.get("OTEL_SERVICE_NAME") or f"switchboard-{service}", "service.namespace": "switchboard"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def kafka_middlewares(service: str, environ: Mapping[str, str] = os.environ) -> tuple[list, TracerProvider | None]:
    """FastStream middlewares for tracing (empty when off) and the provider to shut down at exit."""
    provider = tracer_provider(service, environ)
    if provider is None:
        return [], None
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    return [KafkaTelemetryMiddleware(tracer_provider=provider)], provider

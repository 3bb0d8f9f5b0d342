"""Structured logs: one JSON object a line, carrying the correlation id, never personal data.

- `correlation_id` (a context variable) is set by the consumer for each event it handles (the
  event's CloudEvents `correlationid`) and by the HTTP middleware from an `X-Correlation-Id`
  request header, so one ticket's lines can be found across all four services with one query.
- The OpenTelemetry trace and span ids are added when tracing is on and a span is current.
- Personal data stays out: ids and types are logged, payloads are not; as a safety net every
  line has e-mail addresses masked, whatever a log call put in it.
"""

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# What FastStream's own log records carry as `extra` (context, never payload).
_FASTSTREAM_FIELDS = ("topic", "group_id", "message_id")


def redact(text: str) -> str:
    return EMAIL.sub("<email>", text)


@contextlib.contextmanager
def correlated(value: str | None) -> Iterator[None]:
    """Log lines inside the block carry `value` as their correlation id."""
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


def safe_correlation_id(value: str | None) -> str | None:
    """An id taken from outside input, only if it looks like one (bounded, no free text)."""
    return value if value and CORRELATION_ID.fullmatch(value) else None


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if (cid := correlation_id.get()) is not None:
            line["correlation_id"] = cid
        for name in _FASTSTREAM_FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                line[name] = redact(str(value))
        line.update(_trace_ids())
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if (cid := correlation_id.get()) is not None:
            text += f" correlation_id={cid}"
        return redact(text)


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger (the service's, FastStream's, uvicorn's) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The lag monitor's probe assigns partitions every 15 s, which this logger would announce each time;
    # the group coordinator's lines already say what each consumer is given.
    logging.getLogger("aiokafka.consumer.subscription_state").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True

"""SLA clocks. Pure: no I/O, so clock arithmetic is tested on its own."""

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Metric(StrEnum):
    FIRST_REPLY = "first_reply"


class ClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    FULFILLED = "fulfilled"
    BREACHED = "breached"


class Clock(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticket_id: str
    metric: Metric
    policy: str
    state: ClockState
    target_seconds: int
    started_at: datetime
    due_at: datetime

    def elapsed_seconds(self, now: datetime) -> float:
        return max((now - self.started_at).total_seconds(), 0.0)

    def remaining_seconds(self, now: datetime) -> float:
        """Negative once the target has passed."""
        return (self.due_at - now).total_seconds()


def start_first_reply_clock(ticket_id: str, created_at: datetime, target_seconds: int) -> Clock:
    """Counts calendar time from the ticket's creation until this default target, for now."""
    return Clock(
        ticket_id=ticket_id,
        metric=Metric.FIRST_REPLY,
        policy="default",
        state=ClockState.RUNNING,
        target_seconds=target_seconds,
        started_at=created_at,
        due_at=created_at + timedelta(seconds=target_seconds),
    )

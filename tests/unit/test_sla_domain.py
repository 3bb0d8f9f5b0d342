"""The first-reply clock, without any I/O."""

from datetime import UTC, datetime, timedelta

from services.sla.domain import ClockState, Metric, start_first_reply_clock

CREATED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_a_first_reply_clock_starts_at_creation_and_is_due_after_its_target():
    clock = start_first_reply_clock("TKT-1", CREATED, target_seconds=3600)

    assert (clock.metric, clock.state, clock.policy) == (Metric.FIRST_REPLY, ClockState.RUNNING, "default")
    assert clock.due_at == CREATED + timedelta(hours=1)


def test_elapsed_and_remaining_time_add_up_to_the_target_and_remaining_goes_negative_after_due():
    clock = start_first_reply_clock("TKT-1", CREATED, target_seconds=3600)
    twenty_minutes_in = CREATED + timedelta(minutes=20)

    assert clock.elapsed_seconds(twenty_minutes_in) + clock.remaining_seconds(twenty_minutes_in) == 3600
    assert clock.remaining_seconds(CREATED + timedelta(hours=2)) == -3600
    assert clock.elapsed_seconds(CREATED - timedelta(minutes=1)) == 0

"""Business-time arithmetic: named cases a person can check by hand, and properties over random ones."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sla.calendar import BusinessCalendar, CalendarNeverOpens, ContinuousTime, Holidays, to_epoch_ms, weekly_hours

HOUR = 3_600_000
MINUTE = 60_000

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(year, month, day, hour=0, minute=0, zone=UTC) -> int:
    return to_epoch_ms(datetime(year, month, day, hour, minute, tzinfo=zone))


def office(timezone="Europe/Berlin", holidays=None) -> BusinessCalendar:
    """Mon-Fri 09:00-12:00 and 13:00-17:00 (a lunch break)."""
    return BusinessCalendar(
        "office", timezone, weekly_hours([(d, 9 * 60, 12 * 60) for d in range(5)] + [(d, 13 * 60, 17 * 60) for d in range(5)]),
        holidays,
    )


def night_shift(timezone="Europe/Berlin") -> BusinessCalendar:
    """Every night 22:00-06:00."""
    return BusinessCalendar("nights", timezone, weekly_hours([(d, 22 * 60, 6 * 60) for d in range(7)]))


def all_day(timezone) -> BusinessCalendar:
    return BusinessCalendar("all-day", timezone, weekly_hours([(d, 0, 24 * 60) for d in range(7)]))


# --- named examples ---------------------------------------------------------------------------


def test_a_working_day_with_a_lunch_break_counts_seven_hours():
    calendar = office()
    assert calendar.elapsed(at(2026, 11, 24, 0, zone=BERLIN), at(2026, 11, 25, 0, zone=BERLIN)) == 7 * HOUR
    # 11:00 + 2h of business time: 1h before lunch, 1h after it.
    assert calendar.add(at(2026, 11, 24, 11, zone=BERLIN), 2 * HOUR) == at(2026, 11, 24, 14, zone=BERLIN)


def test_friday_afternoon_plus_two_hours_is_monday_morning():
    calendar = office()
    assert calendar.add(at(2026, 11, 27, 16, zone=BERLIN), 2 * HOUR) == at(2026, 11, 30, 10, zone=BERLIN)


def test_time_in_closed_hours_does_not_count_and_starts_at_the_next_opening():
    calendar = office()
    assert calendar.elapsed(at(2026, 11, 24, 18, zone=BERLIN), at(2026, 11, 25, 8, zone=BERLIN)) == 0
    assert calendar.add(at(2026, 11, 24, 20, zone=BERLIN), 30 * MINUTE) == at(2026, 11, 25, 9, 30, zone=BERLIN)


@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [(BERLIN, date(2026, 3, 29), date(2026, 10, 25)), (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1))],
)
def test_dst_days_last_23_and_25_real_hours_and_business_time_is_real_time(zone, spring, fall):
    calendar = all_day(str(zone))
    start = lambda d: to_epoch_ms(datetime(d.year, d.month, d.day, tzinfo=zone))  # noqa: E731
    assert calendar.elapsed(start(spring), start(spring + timedelta(days=1))) == 23 * HOUR
    assert calendar.elapsed(start(fall), start(fall + timedelta(days=1))) == 25 * HOUR
    # 24 hours of open time from the start of the spring-forward day end at 01:00 the next day.
    assert calendar.add(start(spring), 24 * HOUR) == to_epoch_ms(
        datetime(spring.year, spring.month, spring.day + 1, 1, tzinfo=zone)
    )


def test_an_overnight_shift_across_the_berlin_spring_forward_lasts_seven_hours():
    calendar = night_shift()
    # Sat 28 March 22:00 to Sun 29 March 06:00 CEST: clocks jump 02:00 -> 03:00.
    assert calendar.elapsed(at(2026, 3, 28, 12, zone=BERLIN), at(2026, 3, 29, 12, zone=BERLIN)) == 7 * HOUR
    assert calendar.elapsed(at(2026, 10, 24, 12, zone=BERLIN), at(2026, 10, 25, 12, zone=BERLIN)) == 9 * HOUR


def test_an_overnight_shift_22_to_06_carries_across_midnight():
    calendar = night_shift()
    assert calendar.add(at(2026, 11, 24, 23, zone=BERLIN), 2 * HOUR) == at(2026, 11, 25, 1, zone=BERLIN)
    assert calendar.add(at(2026, 11, 25, 5, zone=BERLIN), 2 * HOUR) == at(2026, 11, 25, 23, zone=BERLIN)
    assert calendar.elapsed(at(2026, 11, 24, 12, zone=BERLIN), at(2026, 11, 25, 12, zone=BERLIN)) == 8 * HOUR


def test_new_york_office_hours_across_the_fall_back_weekend():
    calendar = office("America/New_York")
    friday_4pm = at(2026, 10, 30, 16, zone=NEW_YORK)
    assert calendar.add(friday_4pm, 2 * HOUR) == at(2026, 11, 2, 10, zone=NEW_YORK)
    assert calendar.elapsed(friday_4pm, at(2026, 11, 2, 10, zone=NEW_YORK)) == 2 * HOUR


def test_dec_31_to_jan_2_skips_the_new_year_holiday():
    calendar = office(holidays=Holidays(country="DE"))
    # Thu 31 Dec 2026 16:00 + 2h: 1h on the 31st; Fri 1 Jan 2027 is New Year's Day, then the weekend:
    # the second hour is Monday 4 January, 09:00-10:00.
    assert calendar.add(at(2026, 12, 31, 16, zone=BERLIN), 2 * HOUR) == at(2027, 1, 4, 10, zone=BERLIN)
    # 2025/26: Wed 31 Dec 16:00 + 2h = Fri 2 Jan 10:00, Thu 1 Jan being a holiday.
    assert calendar.add(at(2025, 12, 31, 16, zone=BERLIN), 2 * HOUR) == at(2026, 1, 2, 10, zone=BERLIN)


def test_explicit_holiday_dates_and_regional_holidays_close_the_calendar():
    calendar = office(holidays=Holidays(country="DE", region="BY", dates=frozenset({date(2026, 11, 25)})))
    assert calendar.elapsed(at(2026, 11, 25, 0, zone=BERLIN), at(2026, 11, 26, 0, zone=BERLIN)) == 0
    assert calendar.elapsed(at(2026, 1, 6, 0, zone=BERLIN), at(2026, 1, 7, 0, zone=BERLIN)) == 0  # Epiphany, Bavaria
    berlin = office(holidays=Holidays(country="DE"))
    assert berlin.elapsed(at(2026, 1, 6, 0, zone=BERLIN), at(2026, 1, 7, 0, zone=BERLIN)) == 7 * HOUR


def test_a_holiday_closes_the_after_midnight_part_of_an_overnight_shift():
    calendar = BusinessCalendar(
        "nights", "Europe/Berlin", weekly_hours([(d, 22 * 60, 6 * 60) for d in range(7)]),
        Holidays(dates=frozenset({date(2026, 11, 25)})),
    )
    # The 24th's shift runs 22:00-24:00 only; the 25th is closed; the 26th opens at 00:00.
    assert calendar.elapsed(at(2026, 11, 24, 12, zone=BERLIN), at(2026, 11, 26, 12, zone=BERLIN)) == 8 * HOUR


def test_calendar_time_counts_every_millisecond():
    calendar = ContinuousTime()
    assert calendar.add(1000, 500) == 1500 and calendar.elapsed(1000, 1500) == 500 and calendar.elapsed(5, 1) == 0


def test_a_calendar_that_never_opens_again_is_an_error_not_a_hang():
    every_day = frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(5 * 366))
    calendar = office(holidays=Holidays(dates=every_day))
    with pytest.raises(CalendarNeverOpens):
        calendar.add(at(2026, 1, 1), HOUR)


# --- properties -------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC", "America/Santiago"]


@st.composite
def calendars(draw):
    zone = draw(st.sampled_from(ZONES))
    intervals = []
    for weekday in range(7):
        for _ in range(draw(st.integers(0, 3))):
            start = draw(st.integers(0, 24 * 60 - 1))
            length = draw(st.integers(1, 14 * 60))
            intervals.append((weekday, start, (start + length) % (24 * 60)))
    if not intervals:
        intervals.append((draw(st.integers(0, 6)), 9 * 60, 17 * 60))
    dates = draw(st.frozensets(st.dates(date(2026, 1, 1), date(2027, 12, 31)), max_size=20))
    holidays = Holidays(country=draw(st.sampled_from([None, "DE", "US"])), dates=dates)
    return BusinessCalendar("random", zone, weekly_hours(intervals), holidays)


instants = st.integers(at(2025, 12, 1), at(2027, 12, 31))
durations = st.integers(1, 30 * 24 * HOUR)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(calendars(), instants, durations)
def test_elapsed_from_start_to_start_plus_d_is_d(calendar, start, duration):
    end = calendar.add(start, duration)
    assert end > start
    assert calendar.elapsed(start, end) == duration


@FAST
@given(calendars(), instants, durations)
def test_add_never_ends_inside_closed_time(calendar, start, duration):
    end = calendar.add(start, duration)
    assert calendar.is_open(end - 1), "the last millisecond counted is open time"
    assert calendar.add(start, duration - 1) < end, "and it is the earliest instant with that much open time"


@FAST
@given(calendars(), instants, durations, durations)
def test_adding_in_pieces_equals_adding_at_once(calendar, start, first, second):
    assert calendar.add(calendar.add(start, first), second) == calendar.add(start, first + second)


@FAST
@given(calendars(), instants, st.integers(0, 20 * 24 * HOUR), st.integers(0, 20 * 24 * HOUR))
def test_elapsed_is_monotonic_and_additive(calendar, start, a, b):
    middle, end = start + a, start + a + b
    assert calendar.elapsed(start, end) == calendar.elapsed(start, middle) + calendar.elapsed(middle, end)
    assert calendar.elapsed(start, middle) <= calendar.elapsed(start, end)
    assert calendar.elapsed(start, end) <= end - start


@FAST
@given(calendars(), instants, durations, durations)
def test_add_is_monotonic_in_the_duration(calendar, start, a, b):
    low, high = sorted((a, b))
    assert calendar.add(start, low) <= calendar.add(start, high)

"""Expected arrivals per interval of a day, from the same weekday of past weeks. Pure.

Method (`seasonal_mean`): the arrivals in interval i of day D are forecast as the mean of the
arrivals in interval i of D − 7, D − 14, … D − 7·N (the last N same weekdays with records; the
days before the first record are not counted as zero). With `trend`, the forecast is then scaled
by the weekly growth: a least-squares line through those N days' totals, extended one week ahead,
over their mean (never below zero).

Backtest: each of those past days with at least one earlier same weekday of its own is forecast
from its own past the same way, and the mean absolute percentage error over the intervals that
had arrivals (MAPE) is reported; no such day, no MAPE.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

Day = list[float]
"""Arrivals per interval of one day."""


@dataclass(frozen=True)
class Forecast:
    arrivals: list[float]
    days_used: list[date]
    backtest_days: list[date]
    mape: float | None


def seasonal_mean(history: list[Day], *, trend: bool = False) -> Day:
    """`history`: the same weekday of past weeks, most recent first, each as arrivals per interval."""
    if not history:
        return []
    intervals = len(history[0])
    mean = [sum(day[i] for day in history) / len(history) for i in range(intervals)]
    if not trend or len(history) < 2:
        return mean
    totals = [sum(day) for day in reversed(history)]  # oldest first: week 0 … n-1
    n = len(totals)
    x_mean, y_mean = (n - 1) / 2, sum(totals) / n
    slope = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(totals)) / sum((x - x_mean) ** 2 for x in range(n))
    ahead = y_mean + slope * (n - x_mean)
    factor = max(ahead, 0.0) / y_mean if y_mean else 1.0
    return [value * factor for value in mean]


def mape(actual: Day, forecast: Day) -> float | None:
    pairs = [(a, f) for a, f in zip(actual, forecast, strict=True) if a > 0]
    if not pairs:
        return None
    return 100 * sum(abs(a - f) / a for a, f in pairs) / len(pairs)


def forecast_day(
    day: date, arrivals_on: Callable[[date], Day], first_day: date | None, *, weeks: int, trend: bool
) -> Forecast:
    """Forecast `day` from up to `weeks` same weekdays before it (none before `first_day`), with a backtest
    of the method on those days."""
    past = _same_weekdays(day, first_day, weeks)
    forecast = seasonal_mean([arrivals_on(d) for d in past], trend=trend)
    errors, tested = [], []
    for past_day in past:
        own_past = _same_weekdays(past_day, first_day, weeks)
        if not own_past:
            continue
        error = mape(arrivals_on(past_day), seasonal_mean([arrivals_on(d) for d in own_past], trend=trend))
        if error is not None:
            errors.append(error)
            tested.append(past_day)
    return Forecast(forecast, past, tested, sum(errors) / len(errors) if errors else None)


def _same_weekdays(day: date, first_day: date | None, weeks: int) -> list[date]:
    if first_day is None:
        return []
    return [d for k in range(1, weeks + 1) if (d := day - timedelta(weeks=k)) >= first_day]

"""The in-memory near horizon of the timers: order, windows, and stale entries."""

from services.sla.timers import NearHorizon


def test_timers_come_out_soonest_first_and_only_when_due():
    horizon = NearHorizon()
    horizon.load([(300, "c", 1), (100, "a", 1), (200, "b", 1)], until_ms=1000)
    assert horizon.next_ms() == 100
    assert horizon.pop_due(150, limit=10) == [(100, "a", 1)]
    assert horizon.pop_due(1000, limit=1) == [(200, "b", 1)]
    assert horizon.pop_due(1000, limit=10) == [(300, "c", 1)]
    assert horizon.next_ms() is None and len(horizon) == 0


def test_a_newer_version_replaces_the_timer_and_an_older_one_is_ignored():
    horizon = NearHorizon()
    horizon.load([(100, "a", 1)], until_ms=1000)
    assert horizon.offer("a", 500, 2)
    assert not horizon.offer("a", 50, 1), "a window read older than what this process wrote"
    assert horizon.pop_due(400, limit=10) == []
    assert horizon.pop_due(500, limit=10) == [(500, "a", 2)]


def test_cancelling_and_timers_beyond_the_window_are_not_held():
    horizon = NearHorizon()
    horizon.load([(100, "a", 1)], until_ms=1000)
    assert not horizon.offer("a", None, 2)
    assert not horizon.offer("b", 5000, 1), "beyond the loaded window: the next window read brings it"
    assert horizon.pop_due(10_000, limit=10) == [] and len(horizon) == 0


def test_many_reschedulings_keep_memory_bounded():
    horizon = NearHorizon()
    horizon.load([], until_ms=10**9)
    for version in range(1, 20_000):
        horizon.offer("a", 1000 + version, version)
    assert len(horizon) == 1 and len(horizon._heap) < 3000
    assert horizon.pop_due(10**9, limit=10) == [(1000 + 19_999, "a", 19_999)]

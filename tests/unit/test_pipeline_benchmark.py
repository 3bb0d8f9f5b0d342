"""The pipeline benchmark's arithmetic: what it prints is only as true as its percentiles and rates."""

from benchmarks.pipeline import Stage, Target, percentile, stage


def test_percentile_is_the_nearest_rank():
    latencies = [float(n) for n in range(100, 0, -1)]
    assert percentile(latencies, 50) == 50.0
    assert percentile(latencies, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_a_stage_counts_what_arrived_from_the_first_submission_to_the_last_arrival():
    sent = {"a": 10.0, "b": 11.0, "c": 12.0}
    arrived = {"a": 12.0, "b": 14.0, "unrelated": 99.0}

    figures = stage(sent, arrived)

    assert figures == Stage(done=2, expected=3, per_second=0.5, p50=2.0, p99=3.0)
    assert not figures.complete


def test_an_incomplete_stage_misses_its_target_however_fast_it_was():
    fast = Stage(done=2, expected=2, per_second=500.0, p50=0.1, p99=0.2)
    target = Target(min_per_second=150, max_p99=30)

    assert fast.meets(target)
    assert not Stage(done=1, expected=2, per_second=500.0, p50=0.1, p99=0.2).meets(target)
    assert not Stage(done=2, expected=2, per_second=100.0, p50=0.1, p99=0.2).meets(target)
    assert stage({"a": 1.0}, {}) == Stage(0, 1, None, None, None)


def test_a_run_of_no_tickets_reports_its_targets_as_not_run():
    target = Target(max_p99=1)

    assert stage({}, {}).verdict(target) == "not run"
    assert Stage(done=2, expected=2, per_second=500.0, p50=0.1, p99=0.2).verdict(target) == "met"
    assert Stage(done=2, expected=2, per_second=500.0, p50=0.1, p99=1.5).verdict(target) == "MISSED"

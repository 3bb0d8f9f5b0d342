import asyncio
import time

from shared.wakeup import IdleBackoff, Wakeup


def test_an_idle_poller_waits_one_more_interval_each_time_up_to_its_limit_and_work_brings_it_back():
    backoff = IdleBackoff(poll_interval_seconds=0.5, max_polls=3)
    waits = [backoff.next_wait(found_work=False) for _ in range(5)]
    assert waits == [0.5, 1.0, 1.5, 1.5, 1.5]
    assert backoff.next_wait(found_work=True) == 0.5
    assert backoff.next_wait(found_work=False) == 0.5


async def test_a_commit_ends_the_sleep_at_once_and_is_used_up_by_it():
    wakeup = Wakeup()
    asyncio.get_running_loop().call_later(0.05, wakeup.set)
    started = time.monotonic()
    await wakeup.sleep(30)
    assert time.monotonic() - started < 5

    wakeup.set()  # a commit between two looks: the next sleep does not wait
    started = time.monotonic()
    await wakeup.sleep(30)
    assert time.monotonic() - started < 5

    started = time.monotonic()
    await wakeup.sleep(0.2)  # nothing woke it this time
    assert time.monotonic() - started >= 0.2

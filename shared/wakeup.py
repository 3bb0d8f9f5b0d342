"""How background loops (outbox relays, notify's sender, sla's timers) wait for their next look.

Each sleeps until its next poll unless a commit in its own process has just given it work, and a
poller that keeps finding nothing looks less and less often, so an idle service costs next to nothing.
"""

import asyncio
import contextlib


class Wakeup:
    """What a loop sleeps on; `set` by a commit that made work for it, which ends the sleep at once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def sleep(self, seconds: float) -> None:
        """Up to `seconds`, or until `set`; either way the next sleep waits for a new `set`."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        self._event.clear()


class IdleBackoff:
    """A poller that finds nothing looks again after one poll interval, then two, … up to `max_polls`;
    finding work brings it back to one."""

    def __init__(self, poll_interval_seconds: float, max_polls: int) -> None:
        self._poll_interval = poll_interval_seconds
        self._max_polls = max_polls
        self._idle_polls = 0

    def next_wait(self, found_work: bool) -> float:
        self._idle_polls = 0 if found_work else min(self._idle_polls + 1, self._max_polls)
        return self._poll_interval * max(1, self._idle_polls)

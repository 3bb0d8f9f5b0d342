"""Group commit: units of work that arrive while a transaction is open share the next one.

Each transaction costs a lock turn and a commit that dwarf a request's own work on the embedded
Mongo-wire server, so an API that opened one per request answered in seconds under load. Here a
request's work waits for the transaction in flight to end, and then runs, in arrival order, with
every other one waiting by the time the next transaction has begun (up to `max_group`) in one
`UnitOfWork.run`.

Each caller still gets its own answer or its own error, as if its work had run alone: if any work
in a group raises (a refused input, a conflict), the whole transaction is aborted, since a failed
write may have aborted it already and the failing work may have written before it raised, and
every work of that group runs again in a transaction of its own. Effects registered with
`Transaction.on_commit` run only for the transaction that commits, so once per committed work.
Each work runs in its caller's context (its request's correlation id, for one), not the committer's.

A group's transaction first calls `prefetch` with what each of its works said it `needs`, so that
what they read by id is read in one query for the whole group (as a consumer batch's prefetch
does), not one round trip per work while the group holds the lock.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from shared.mongo import Transaction, UnitOfWork, Work

T = TypeVar("T")
Prefetch = Callable[[Transaction, Sequence[Any]], Awaitable[None]]


class Waiting(NamedTuple):
    work: Work[Any]
    answer: asyncio.Future
    needs: Any


class GroupCommit:
    def __init__(self, uow: UnitOfWork, max_group: int = 50, prefetch: Prefetch | None = None) -> None:
        self._uow = uow
        self._max_group = max_group
        self._prefetch = prefetch
        self._waiting: list[Waiting] = []
        self._committer: asyncio.Task | None = None

    async def run(self, work: Work[T], needs: Any = None) -> T:
        """Run `work` in the next group's transaction; its result, or what it raised. `needs`, if any, is
        handed to the group's `prefetch`."""
        answer = asyncio.get_running_loop().create_future()
        callers = contextvars.copy_context()

        async def in_callers_context(tx: Transaction) -> T:
            return await asyncio.create_task(work(tx), context=callers)

        self._waiting.append(Waiting(in_callers_context, answer, needs))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        return await answer

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group: list[Waiting] = []
            try:
                await self._commit(group)
            except BaseException:  # cancelled at shutdown: no caller is left waiting for ever
                for waiting in group + self._waiting:
                    waiting.answer.cancel()
                raise

    async def _commit(self, group: list[Waiting]) -> None:
        """The group is taken once the transaction has begun, not before it waits for the lock: whatever
        arrived meanwhile (the rest of a round of sends, the requests behind a consumer's long batch) joins
        it, instead of waiting for one more turn of the lock each."""
        try:
            results = await self._uow.run(lambda tx: self._in_order(tx, group))
        except Exception as error:
            if len(group) == 1:
                _answer(group[0].answer, error=error)
                return
            # Someone's work failed, and so did the transaction (or it never began: then the group was never
            # taken): each runs again alone, concurrently, so that a database that is down fails them all at
            # once, not one after another.
            if not group:
                group.extend(self._take())
            await asyncio.gather(*(self._alone(waiting.work, waiting.answer) for waiting in group))
        else:
            for waiting, result in zip(group, results, strict=True):
                _answer(waiting.answer, result=result)

    def _take(self) -> list[Waiting]:
        group = [waiting for waiting in self._waiting[: self._max_group] if not waiting.answer.done()]
        del self._waiting[: self._max_group]
        return group

    async def _alone(self, work: Work[Any], answer: asyncio.Future) -> None:
        try:
            result = await self._uow.run(work)
        except Exception as error:
            _answer(answer, error=error)
        else:
            _answer(answer, result=result)

    async def _in_order(self, tx: Transaction, group: list[Waiting]) -> list:
        """`group` is filled on the first attempt; a transaction the driver retries runs the same one again."""
        if not group:
            group.extend(self._take())
        if self._prefetch is not None:
            await self._prefetch(tx, [waiting.needs for waiting in group if waiting.needs is not None])
        return [await waiting.work(tx) for waiting in group]


def _answer(answer: asyncio.Future, *, result: Any = None, error: Exception | None = None) -> None:
    if answer.done():  # its caller is gone (a client that hung up)
        return
    if error is None:
        answer.set_result(result)
    else:
        answer.set_exception(error)

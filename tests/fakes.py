"""A unit of work without a database, for the service-layer tests (as in cosmicpython).

A service's test gives it a factory of that service's fake transaction: an object with the same
repository attributes (`tx.tickets`…) over in-memory stores the test keeps between transactions.
`run` behaves as a commit does: the work's events are published and its `on_commit` effects run;
if the work raises, nothing it asked for happens.
"""

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from shared.envelope import Envelope

T = TypeVar("T")


class FakeTransaction:
    """What `shared.mongo.Transaction` offers a use case, less the database."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []
        self.committed: list[Callable[[], None]] = []
        self.cache: dict = {}

    def publish(self, topic: str, event: Envelope) -> None:
        self.events.append((topic, event))

    def on_commit(self, effect: Callable[[], None]) -> None:
        self.committed.append(effect)

    def write_later(self, collection: str, *operations) -> None:
        raise AssertionError("a fake transaction's repositories keep their writes themselves")

    async def flush(self) -> None:
        return None


Tx = TypeVar("Tx", bound=FakeTransaction)


class FakeUnitOfWork(Generic[Tx]):
    def __init__(self, new_transaction: Callable[[], Tx]) -> None:
        self._new_transaction = new_transaction
        self.published: list[tuple[str, Envelope]] = []
        self.commits = 0

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        transaction = self._new_transaction()
        result = await work(transaction)
        self.commits += 1
        self.published.extend(transaction.events)
        for effect in transaction.committed:
            effect()
        return result

    @property
    def reads(self) -> Tx:
        return self._new_transaction()

    def after_commit(self, listener: Callable[[], None]) -> None:
        return None

    def events_of_type(self, event_type: str) -> list[Envelope]:
        return [event for _, event in self.published if event.type == event_type]

"""Insights' use case on a fake unit of work: what a consumed event makes it store."""

from datetime import UTC, datetime

from services.insights import domain
from services.insights.service import Insights
from shared.envelope import new_event
from shared.events import NotificationSent
from tests import insights_scenario as scenario
from tests.fakes import FakeTransaction, FakeUnitOfWork


class FakeFacts:
    """Fold states by ticket id, and every save the use case asked for."""

    def __init__(self) -> None:
        self.states: dict[str, dict] = {}
        self.saves: list[str] = []

    async def state(self, ticket_id: str) -> dict:
        return self.states.get(ticket_id, domain.new_state())

    def save_later(self, ticket_id: str, state: dict) -> None:
        self.states[ticket_id] = state
        self.saves.append(ticket_id)


class FakeInsightsTransaction(FakeTransaction):
    def __init__(self, facts: FakeFacts) -> None:
        super().__init__()
        self.facts = facts


def sent(ticket_id: str, kind: str):
    at = datetime(2025, 3, 20, tzinfo=UTC)
    return new_event(
        NotificationSent(notification_id=f"{ticket_id}-{kind}", ticket_id=ticket_id, kind=kind, channel="email", sent_at=at),
        source="tests/insights",
        subject=ticket_id,
    )


async def test_an_event_that_changes_no_fact_writes_nothing() -> None:
    facts = FakeFacts()
    uow = FakeUnitOfWork(lambda: FakeInsightsTransaction(facts))
    insights = Insights(uow)
    published = [event for _, event in scenario.events("p") if event.data.ticket_id == "p-t3"]
    for event in published:
        await uow.run(lambda tx, event=event: insights.on_event(tx, event))
    first_pass = len(facts.saves)
    assert first_pass == len(published) - 2  # all but the private note and the second public reply
    stored = facts.states["p-t3"]

    for event in [*published, sent("p-t3", "acknowledgement"), sent("p-t3", "agent_reply")]:
        await uow.run(lambda tx, event=event: insights.on_event(tx, event))
    assert len(facts.saves) == first_pass  # replays and notifications no report counts: no write
    assert facts.states["p-t3"] == stored

    await uow.run(lambda tx: insights.on_event(tx, sent("p-t3", "csat_survey")))
    assert facts.saves[first_pass:] == ["p-t3"]
    assert domain.fact_document("p-t3", facts.states["p-t3"])["csat_surveyed"] == 1

"""Intake's use cases on a fake unit of work: what each stores and which events it publishes."""

import uuid
from dataclasses import dataclass, field

import pytest
from pymongo.errors import DuplicateKeyError

from services.intake.domain import Message, NotRatable, Ticket
from services.intake.service import IdempotencyConflict, Intake, SurveyAnswered, VersionMismatch
from shared.clock import utc_now
from shared.consumer import RejectedEvent
from shared.envelope import new_event
from shared.events import (
    AuthorType,
    Channel,
    Customer,
    CustomerNpsReceived,
    Priority,
    TicketAssigned,
    TicketStatus,
    TicketSubmit,
)
from tests.fakes import FakeTransaction, FakeUnitOfWork


@dataclass
class IntakeStore:
    """What intake's collections hold, kept between the fake transactions."""

    tickets: dict[str, Ticket] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    customers: dict[str, dict] = field(default_factory=dict)
    keys: dict[str, dict] = field(default_factory=dict)
    nps_answers: dict[str, CustomerNpsReceived] = field(default_factory=dict)


class FakeTickets:
    def __init__(self, store: IntakeStore) -> None:
        self._tickets = store.tickets

    async def prefetch(self, ticket_ids) -> None:
        return None

    async def add(self, ticket: Ticket) -> None:
        self._tickets[ticket.id] = ticket

    async def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    async def replace(self, ticket: Ticket, *, expected_version: int) -> bool:
        if self._tickets[ticket.id].version != expected_version:
            return False
        self._tickets[ticket.id] = ticket
        return True

    def replace_later(self, ticket: Ticket, *, expected_version: int) -> None:
        assert self._tickets[ticket.id].version == expected_version, "the queued write would fail the transaction"
        self._tickets[ticket.id] = ticket


class FakeMessages:
    def __init__(self, store: IntakeStore) -> None:
        self._messages = store.messages

    async def add(self, message: Message) -> None:
        self._messages.append(message)


class FakeCustomers:
    def __init__(self, store: IntakeStore) -> None:
        self._customers = store.customers

    async def prefetch(self, customer_ids) -> None:
        return None

    async def upsert(self, given: Customer, now: int) -> dict:
        by_email = [profile for profile in self._customers.values() if given.email and profile.get("email") == given.email]
        existing = self._customers.get(given.id) if given.id else next(iter(by_email), None)
        customer_id = existing["_id"] if existing else given.id or f"cust-{len(self._customers) + 1}"
        fields = given.model_dump(mode="json", exclude={"id"}, exclude_none=True)
        self._customers[customer_id] = {**(existing or {"_id": customer_id}), **fields}
        return self._customers[customer_id]

    async def remember_agent(self, customer_id: str, agent_id: str, ticket_id: str) -> None:
        if customer_id in self._customers:
            self._customers[customer_id].update(last_agent_id=agent_id, last_ticket_id=ticket_id)


class FakeIdempotencyKeys:
    def __init__(self, store: IntakeStore) -> None:
        self._keys = store.keys

    async def find(self, key: str) -> dict | None:
        return self._keys.get(key)

    async def remember(self, key: str, *, fingerprint: str, ticket_id: str, at_ms: int, answer: dict | None = None,
                       **outcome) -> None:
        if key in self._keys:
            raise DuplicateKeyError(key)
        self._keys[key] = {"fingerprint": fingerprint, "ticket_id": ticket_id, "answer": answer, **outcome}


class FakeNpsAnswers:
    def __init__(self, store: IntakeStore) -> None:
        self._answers = store.nps_answers

    async def answered(self, survey_id: str) -> bool:
        return survey_id in self._answers

    async def add(self, answer: CustomerNpsReceived) -> None:
        if answer.survey_id in self._answers:
            raise DuplicateKeyError(answer.survey_id)
        self._answers[answer.survey_id] = answer


class FakeIntakeTransaction(FakeTransaction):
    def __init__(self, store: IntakeStore) -> None:
        super().__init__()
        self.tickets = FakeTickets(store)
        self.messages = FakeMessages(store)
        self.customers = FakeCustomers(store)
        self.idempotency_keys = FakeIdempotencyKeys(store)
        self.nps_answers = FakeNpsAnswers(store)


@pytest.fixture
def store() -> IntakeStore:
    return IntakeStore()


@pytest.fixture
def uow(store) -> FakeUnitOfWork:
    return FakeUnitOfWork(lambda: FakeIntakeTransaction(store))


@pytest.fixture
def created() -> list[Ticket]:
    return []


@pytest.fixture
def intake(uow, created) -> Intake:
    return Intake(uow, "switchboard/intake", on_created=created.append)


def submission(subject: str = "Printer on fire", customer_id: str = "cust-1") -> TicketSubmit:
    return TicketSubmit(channel=Channel.API, customer=Customer(id=customer_id, name="Dee"), subject=subject, body="Help")


def types_published(uow: FakeUnitOfWork) -> list[str]:
    return [event.type for _, event in uow.published]


async def test_a_submission_opens_a_ticket_announced_once_and_counted_after_the_commit(intake, uow, store, created):
    submitted = await intake.submit(submission())

    assert not submitted.replayed and submitted.ticket.status is TicketStatus.NEW
    assert store.tickets == {submitted.ticket.id: submitted.ticket}
    assert store.customers["cust-1"]["name"] == "Dee"
    (event,) = uow.events_of_type("support.ticket.created.v1")
    assert (event.subject, event.data.subject) == (submitted.ticket.id, "Printer on fire")
    assert created == [submitted.ticket]


async def test_the_same_idempotency_key_and_submission_again_gives_the_first_ticket_and_announces_nothing(
    intake, uow, store
):
    first = await intake.submit(submission(), idempotency_key="k-1")
    again = await intake.submit(submission(), idempotency_key="k-1")

    assert again.replayed and again.ticket == first.ticket
    assert len(store.tickets) == 1
    assert types_published(uow) == ["support.ticket.created.v1"]


async def test_the_same_idempotency_key_with_another_submission_is_a_conflict_that_opens_nothing(intake, uow, store):
    await intake.submit(submission(), idempotency_key="k-1")

    with pytest.raises(IdempotencyConflict):
        await intake.submit(submission(subject="Something else"), idempotency_key="k-1")
    assert len(store.tickets) == 1
    assert types_published(uow) == ["support.ticket.created.v1"]


async def test_a_submit_command_opens_a_ticket_whose_event_follows_the_command(intake, uow):
    command = new_event(submission(), source="crm", subject=str(uuid.uuid4()))

    await uow.run(lambda tx: intake.on_submit_command(tx, command))

    (event,) = uow.events_of_type("support.ticket.created.v1")
    assert (event.correlationid, event.causationid) == (command.correlationid, str(command.id))


async def test_a_submit_command_with_metadata_that_does_not_fit_its_channel_is_rejected_with_the_reason(intake, uow):
    command = new_event(
        TicketSubmit.model_validate({"channel": "social", "customer": {"id": "c-1"}, "subject": "s", "body": "b",
                                     "metadata": {"caller_number": "+4930"}}),
        source="crm",
        subject=str(uuid.uuid4()),
    )
    with pytest.raises(RejectedEvent, match="metadata.network: Field required"):
        await uow.run(lambda tx: intake.on_submit_command(tx, command))
    assert uow.published == []


async def test_an_agents_reply_is_stored_and_announced(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket

    added = await intake.add_message(ticket.id, author_type=AuthorType.AGENT, author_id="agent-1", body="On it",
                                     public=True)

    assert store.messages == [added.message]
    assert added.ticket.version == ticket.version + 1
    (event,) = uow.events_of_type("support.ticket.message_added.v1")
    assert (event.data.message_id, event.data.body) == (added.message.id, "On it")


async def test_a_customers_reply_to_a_pending_ticket_opens_it_again(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket
    await intake.edit(ticket.id, status=TicketStatus.PENDING, priority=None, tags=None, expected_version=None)

    added = await intake.add_message(ticket.id, author_type=AuthorType.CUSTOMER, author_id="cust-1", body="Still on fire",
                                     public=True)

    assert store.tickets[ticket.id].status is TicketStatus.OPEN
    assert types_published(uow)[-2:] == ["support.ticket.message_added.v1", "support.ticket.status_changed.v1"]
    assert added.follow_up_of is None


async def test_an_edit_naming_a_stale_version_changes_nothing(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket

    with pytest.raises(VersionMismatch, match=f"version {ticket.version}"):
        await intake.edit(ticket.id, status=None, priority=Priority.URGENT, tags=None, expected_version=ticket.version + 1)
    assert store.tickets[ticket.id] == ticket
    assert types_published(uow) == ["support.ticket.created.v1"]


async def test_an_edit_of_the_current_version_stores_and_announces_each_change(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket

    edited = await intake.edit(ticket.id, status=None, priority=Priority.URGENT, tags=["vip"],
                               expected_version=ticket.version)

    assert store.tickets[ticket.id] == edited and edited.version == ticket.version + 1
    assert types_published(uow)[1:] == ["support.ticket.priority_changed.v1", "support.ticket.tags_changed.v1"]


async def test_a_solved_ticket_takes_a_rating_which_is_announced(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket
    await intake.edit(ticket.id, status=TicketStatus.SOLVED, priority=None, tags=None, expected_version=None)

    rated = await intake.rate(ticket.id, 5, "Quick!")

    assert store.tickets[ticket.id].csat.score == 5 and rated.csat.comment == "Quick!"
    (event,) = uow.events_of_type("support.ticket.csat_received.v1")
    assert (event.data.ticket_id, event.data.score) == (ticket.id, 5)


async def test_a_ticket_that_is_not_solved_cannot_be_rated(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket

    with pytest.raises(NotRatable):
        await intake.rate(ticket.id, 5, None)
    assert store.tickets[ticket.id].csat is None
    assert uow.events_of_type("support.ticket.csat_received.v1") == []


async def answer(intake: Intake, score: int = 9, comment: str | None = "Fast and kind") -> CustomerNpsReceived:
    return await intake.answer_nps(
        survey_id="nps-1", customer_id="cust-1", ticket_id="TKT-1", score=score, comment=comment
    )


async def test_an_nps_answer_is_recorded_and_announced_in_the_same_commit(intake, uow, store):
    answered = await answer(intake)

    assert store.nps_answers == {"nps-1": answered}
    assert (answered.customer_id, answered.ticket_id, answered.score, answered.comment) == ("cust-1", "TKT-1", 9, "Fast and kind")
    (event,) = uow.events_of_type("support.customer.nps_received.v1")
    assert (event.data, event.subject) == (answered, "TKT-1")
    assert uow.commits == 1


async def test_a_second_answer_to_the_same_survey_is_refused_and_the_first_stands(intake, uow, store):
    first = await answer(intake, score=9)

    with pytest.raises(SurveyAnswered, match="survey nps-1 was already answered; an answer cannot be changed"):
        await answer(intake, score=2)

    assert store.nps_answers == {"nps-1": first}
    assert [event.data.score for event in uow.events_of_type("support.customer.nps_received.v1")] == [9]


async def test_an_answer_stored_between_the_check_and_the_insert_is_refused_too(intake, uow, store, monkeypatch):
    first = await answer(intake, score=9)

    async def not_seen_yet(self, survey_id: str) -> bool:
        return False

    monkeypatch.setattr(FakeNpsAnswers, "answered", not_seen_yet)
    with pytest.raises(SurveyAnswered):
        await answer(intake, score=2)

    assert store.nps_answers == {"nps-1": first}
    assert len(uow.events_of_type("support.customer.nps_received.v1")) == 1


async def test_an_assignment_sets_the_assignee_and_the_customers_last_agent(intake, uow, store):
    ticket = (await intake.submit(submission())).ticket
    assigned = new_event(TicketAssigned(ticket_id=ticket.id, agent_id="agent-7", reason="best match",
                                        assigned_at=ticket.created_at), source="switchboard/routing", subject=ticket.id)

    await uow.run(lambda tx: intake.on_assigned(tx, assigned))

    assert (store.tickets[ticket.id].assignee_id, store.tickets[ticket.id].status) == ("agent-7", TicketStatus.OPEN)
    assert store.customers["cust-1"]["last_agent_id"] == "agent-7"


async def test_an_assignment_of_a_ticket_intake_does_not_know_is_rejected(intake, uow):
    assigned = new_event(TicketAssigned(ticket_id="TKT-nowhere", agent_id="agent-7", reason="best match",
                                        assigned_at=utc_now()), source="switchboard/routing", subject="TKT-nowhere")

    with pytest.raises(RejectedEvent, match="unknown ticket TKT-nowhere"):
        await uow.run(lambda tx: intake.on_assigned(tx, assigned))


def test_list_cursors_round_trip_and_anything_else_is_refused():
    from services.intake.repository import InvalidCursor, decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor("TKT-1a20d550b1a-2040dd")) == "TKT-1a20d550b1a-2040dd"
    for forged in ("%%%", "/w", "abc", encode_cursor("not-a-ticket")):
        with pytest.raises(InvalidCursor):
            decode_cursor(forged)

"""Who gets a ticket: eligibility, choice and queue order, without any I/O."""

from datetime import UTC, datetime, timedelta

import pytest

from services.routing.domain import Agent, AgentProfile, Presence, WaitingTicket, can_take, choose_agent, queue_order
from shared.events import Priority

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def agent(agent_id: str, *, skills=None, capacity=2, load=0, status=Presence.AVAILABLE) -> Agent:
    return Agent(id=agent_id, name=agent_id, skills=skills or {}, capacity=capacity, status=status, load=load)


def ticket(*skills: str, priority=Priority.NORMAL, age_minutes=0) -> WaitingTicket:
    return WaitingTicket(
        ticket_id=f"T-{priority}-{age_minutes}",
        priority=priority,
        required_skills=list(skills),
        created_at=T0 - timedelta(minutes=age_minutes),
    )


@pytest.mark.parametrize(
    ("candidate", "eligible"),
    [
        (agent("a", skills={"billing": 1}), True),
        (agent("a", skills={"billing": 1, "legal": 3}), True),
        (agent("a", skills={"legal": 3}), False),
        (agent("a", skills={"billing": 1}, status=Presence.AWAY), False),
        (agent("a", skills={"billing": 1}, status=Presence.OFFLINE), False),
        (agent("a", skills={"billing": 1}, capacity=2, load=2), False),
        (agent("a", skills={"billing": 1}, capacity=0), False),
    ],
)
def test_an_agent_can_take_a_ticket_only_when_available_skilled_and_not_full(candidate, eligible):
    assert can_take(candidate, ticket("billing")) is eligible


def test_the_least_utilised_eligible_agent_is_chosen_and_the_reason_says_why():
    busy = agent("busy", skills={"billing": 5}, capacity=2, load=1)
    idle = agent("idle", skills={"billing": 2}, capacity=4, load=0)
    unskilled = agent("unskilled", capacity=10)

    match = choose_agent([busy, idle, unskilled], ticket("billing"))

    assert match.agent.id == "idle"
    assert "billing 2" in match.reason and "2 eligible" in match.reason


def test_nobody_is_chosen_when_no_agent_qualifies():
    assert choose_agent([agent("a", skills={"legal": 1})], ticket("billing")) is None


def test_the_queue_serves_priority_first_then_age():
    old_normal = ticket(priority=Priority.NORMAL, age_minutes=30)
    new_urgent = ticket(priority=Priority.URGENT, age_minutes=1)
    new_normal = ticket(priority=Priority.NORMAL, age_minutes=1)

    assert sorted([new_normal, old_normal, new_urgent], key=queue_order) == [new_urgent, old_normal, new_normal]


def test_a_profile_change_keeps_the_tickets_an_agent_already_holds():
    holding = agent("a", skills={"billing": 1}, capacity=3, load=2)

    updated = holding.with_profile(AgentProfile(name="A", skills={"legal": 2}, capacity=1, status=Presence.AWAY))

    assert (updated.load, updated.capacity, updated.free) == (2, 1, 0)
    assert updated.version == holding.version + 1


@pytest.mark.parametrize(
    "profile",
    [{"name": "A", "capacity": -1}, {"name": "A", "capacity": 1, "skills": {"billing": 0}},
     {"name": "A", "capacity": 1, "skills": {"billing": 6}}, {"name": "", "capacity": 1},
     {"name": "A", "capacity": 1, "status": "busy"}],
)
def test_invalid_profiles_are_refused(profile):
    with pytest.raises(ValueError):
        AgentProfile.model_validate(profile)

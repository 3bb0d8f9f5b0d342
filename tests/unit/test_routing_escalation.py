"""The escalation workflow: configured steps relax what a waiting ticket needs; bad config refuses to start."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.routing.domain import Agent, EscalationPolicy, Presence, Tier, WaitingTicket
from services.routing.settings import RoutingSettings
from shared.events import Priority

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
WORKFLOW = {
    "team_by_category": {"billing": ["payments"]},
    "steps": [
        {"after_seconds": 120, "action": "relax_skill_level", "levels": 1},
        {"after_seconds": 300, "action": "widen_to_team", "teams": ["backoffice"]},
        {"after_seconds": 300, "action": "widen_to_l2"},
        {"after_seconds": 900, "action": "supervisor_queue"},
    ],
}


def waiting(step: int, **fields) -> WaitingTicket:
    return WaitingTicket(ticket_id="T1", priority=Priority.NORMAL, required_skills=["billing"],
                         skill_levels={"billing": 3}, category="billing", created_at=T0, escalation_step=step, **fields)


def agent(agent_id, *, level=3, tier=Tier.L1, team="payments") -> Agent:
    return Agent(id=agent_id, name=agent_id, skills={"billing": level}, capacity=2, status=Presence.AVAILABLE,
                 tier=tier, team=team)


def test_steps_come_due_by_waiting_time_and_each_is_numbered():
    policy = EscalationPolicy.model_validate(WORKFLOW)

    assert policy.due_steps(0, 60) == []
    assert [n for n, _ in policy.due_steps(0, 130)] == [1]
    assert [n for n, _ in policy.due_steps(1, 310)] == [2, 3]
    assert [n for n, _ in policy.due_steps(0, 1000)] == [1, 2, 3, 4]
    assert policy.next_due_seconds(0) == 120 and policy.next_due_seconds(4) is None


def test_each_step_relaxes_the_requirements_in_turn():
    policy = EscalationPolicy.model_validate(WORKFLOW)
    novice, outsider, senior, boss = (
        agent("novice", level=2), agent("outsider", team="backoffice"), agent("senior", tier=Tier.L2),
        agent("boss", level=1, tier=Tier.SUPERVISOR, team=None),
    )

    def admitted(step):
        requirements = policy.requirements(waiting(step), T0)
        return {a.id for a in (novice, outsider, senior, boss) if requirements.admits(a)}

    assert admitted(0) == set(), "level 3, team payments, l1 only"
    assert admitted(1) == {"novice"}, "level relaxed to 2"
    assert admitted(2) == {"novice", "outsider"}, "backoffice added"
    assert admitted(3) == {"novice", "outsider", "senior"}, "l2 added"
    assert admitted(4) == {"boss"}, "supervisors only, skills aside"


def test_without_a_widen_to_l2_step_l1_and_l2_agents_take_tickets_from_the_start():
    requirements = EscalationPolicy().requirements(waiting(0), T0)
    assert requirements.tiers == {Tier.L1, Tier.L2} and requirements.teams is None
    assert requirements.skill_levels == {"billing": 3}


def test_a_widen_to_team_step_without_teams_lifts_the_team_restriction():
    policy = EscalationPolicy.model_validate(
        {"team_by_category": {"billing": ["payments"]}, "steps": [{"after_seconds": 10, "action": "widen_to_team"}]}
    )
    assert policy.requirements(waiting(0), T0).teams == {"payments"}
    assert policy.requirements(waiting(1), T0).teams is None


def test_skill_levels_never_relax_below_one():
    policy = EscalationPolicy.model_validate({"steps": [{"after_seconds": 1, "action": "relax_skill_level", "levels": 4}]})
    assert policy.requirements(waiting(1), T0).skill_levels == {"billing": 1}


def test_declined_agents_are_left_out_during_the_cooldown():
    requirements = EscalationPolicy().requirements(waiting(0, declines={"a": T0}), T0 + timedelta(seconds=299))
    assert not requirements.admits(agent("a"))


@pytest.mark.parametrize(
    ("workflow", "reason"),
    [
        ({"steps": [{"after_seconds": 60, "action": "teleport"}]}, "steps.0.action"),
        ({"steps": [{"after_seconds": -1, "action": "widen_to_l2"}]}, "steps.0.after_seconds"),
        ({"steps": [{"after_seconds": 60, "action": "widen_to_l2"}, {"after_seconds": 30, "action": "widen_to_l2"}]},
         "in order of after_seconds"),
        ({"steps": [{"after_seconds": 60, "action": "supervisor_queue"}, {"after_seconds": 90, "action": "widen_to_l2"}]},
         "supervisor_queue can only be the last step"),
        ({"steps": [{"after_seconds": 60, "action": "widen_to_l2", "surprise": 1}]}, "steps.0.surprise"),
    ],
)
def test_an_invalid_workflow_refuses_to_start_and_says_why(monkeypatch, workflow, reason):
    monkeypatch.setenv("ESCALATION_JSON", json.dumps(workflow))
    with pytest.raises(ValueError, match="invalid escalation workflow") as refused:
        RoutingSettings()
    assert reason in str(refused.value)


def test_the_workflow_loads_from_a_yaml_file(tmp_path, monkeypatch):
    path = tmp_path / "escalation.yaml"
    path.write_text(
        "team_by_category:\n  billing: [payments]\nsteps:\n"
        "  - {after_seconds: 120, action: relax_skill_level}\n  - {after_seconds: 600, action: supervisor_queue}\n"
    )
    monkeypatch.setenv("ESCALATION_FILE", str(path))
    policy = RoutingSettings().escalation_policy()
    assert [step.action.value for step in policy.steps] == ["relax_skill_level", "supervisor_queue"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"ESCALATION_FILE": "/nonexistent/escalation.yaml"}, "cannot read"),
     ({"ESCALATION_JSON": "{not json"}, "cannot read"),
     ({"ESCALATION_JSON": "{}", "ESCALATION_FILE": "/x.yaml"}, "not both")],
)
def test_an_unreadable_workflow_refuses_to_start(monkeypatch, env, reason):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=reason):
        RoutingSettings()


def test_routing_settings_defaults_and_parsing(monkeypatch):
    settings = RoutingSettings()
    assert settings.routing_mode == "auto" and settings.offer_timeout_seconds == 120
    assert settings.unassign_on_presence == [Presence.OFFLINE]
    monkeypatch.setenv("UNASSIGN_ON_PRESENCE", "away, offline")
    monkeypatch.setenv("ROUTING_MODE", "offer")
    settings = RoutingSettings()
    assert settings.unassign_on_presence == [Presence.AWAY, Presence.OFFLINE] and settings.routing_mode == "offer"
    monkeypatch.setenv("UNASSIGN_ON_PRESENCE", "")
    assert RoutingSettings().unassign_on_presence == []

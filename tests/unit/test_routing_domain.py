"""Who gets a ticket: eligibility, scoring and queue order; the routed ticket's transitions. Without any I/O."""

from datetime import UTC, datetime, timedelta

import pytest

from services.routing.domain import (
    Agent,
    AgentProfile,
    EscalationPolicy,
    InvalidTransition,
    OfferClosed,
    Presence,
    RoutedTicket,
    RoutedTicketState,
    Tier,
    WaitingTicket,
    affinity_agent,
    can_return_to,
    can_take,
    channel_capacity,
    choose_agent,
    presence_instant,
    queue_key,
    queue_order,
    score,
    supersedes,
)
from shared.events import (
    Channel,
    OfferOutcome,
    Priority,
    TicketAssigned,
    TicketEscalated,
    TicketOfferAnswered,
    TicketOffered,
    TicketUnassigned,
)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def agent(agent_id: str, *, skills=None, capacity=2, load=0, status=Presence.AVAILABLE, channel="web",
          languages=(), tier=Tier.L1, team=None, idle_minutes=None) -> Agent:
    return Agent(
        id=agent_id, name=agent_id, skills=skills or {}, capacity=capacity, status=status, load=load,
        load_by_channel={channel: load} if load else {}, languages=list(languages), tier=tier, team=team,
        last_assigned_at=T0 - timedelta(minutes=idle_minutes) if idle_minutes is not None else None,
    )


def ticket(*skills: str, priority=Priority.NORMAL, age_minutes=0, levels=None, channel=Channel.WEB, language=None,
           ticket_id=None, sla_warned=False, previous_agent_id=None) -> WaitingTicket:
    return WaitingTicket(
        ticket_id=ticket_id or f"T-{priority}-{age_minutes}",
        priority=priority,
        required_skills=list(skills),
        skill_levels=levels or {},
        channel=channel,
        language=language,
        created_at=T0 - timedelta(minutes=age_minutes),
        sla_warned=sla_warned,
        previous_agent_id=previous_agent_id,
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
        (agent("a", skills={"billing": 1}, tier=Tier.SUPERVISOR), False),
    ],
)
def test_an_agent_can_take_a_ticket_only_when_available_skilled_and_not_full(candidate, eligible):
    assert can_take(candidate, ticket("billing")) is eligible


@pytest.mark.parametrize(("level", "eligible"), [(1, False), (2, False), (3, True), (5, True)])
def test_every_required_skill_must_be_held_at_or_above_its_level(level, eligible):
    assert can_take(agent("a", skills={"billing": level}), ticket("billing", levels={"billing": 3})) is eligible


@pytest.mark.parametrize(
    ("languages", "ticket_language", "eligible"),
    [((), "de", True), (("de",), "de", True), (("de", "en"), "de-AT", True), (("en",), "de", False),
     (("pt-BR",), "pt", True), (("en",), None, True)],
)
def test_the_agent_must_speak_the_tickets_language_and_no_languages_means_unrestricted(
    languages, ticket_language, eligible
):
    assert can_take(agent("a", languages=languages), ticket(language=ticket_language)) is eligible


def test_capacity_per_channel_is_independent_and_a_plain_number_is_a_pool_every_channel_draws_on():
    per_channel = Agent(id="a", name="a", skills={}, capacity={"chat": 3, "email": 10, "phone": 1},
                        status=Presence.AVAILABLE, load=4, load_by_channel={"chat": 3, "phone": 1})
    pool = Agent(id="b", name="b", skills={}, capacity=2, status=Presence.AVAILABLE, load=2,
                 load_by_channel={"web": 1, "email": 1})

    assert (per_channel.free_on("chat"), per_channel.free_on("email"), per_channel.free_on("phone")) == (0, 10, 0)
    assert per_channel.free_on("web") == 0, "channels not named get no capacity"
    assert per_channel.free == 10
    assert pool.free == 0 and all(pool.free_on(channel) == 0 for channel in ("web", "chat", "email"))
    assert channel_capacity(3) == ({c.value: 3 for c in Channel}, 3)
    assert can_take(per_channel, ticket(channel=Channel.EMAIL))
    assert not can_take(per_channel, ticket(channel=Channel.CHAT))


def test_the_least_utilised_eligible_agent_is_chosen_and_the_reason_says_why():
    busy = agent("busy", skills={"billing": 5}, capacity=2, load=1)
    idle = agent("idle", skills={"billing": 2}, capacity=4, load=0)
    unskilled = agent("unskilled", capacity=10)

    match = choose_agent([busy, idle, unskilled], ticket("billing"))

    assert match.agent.id == "idle"
    assert "billing 2>=1" in match.reason and "2 eligible" in match.reason and "web load 0/4" in match.reason


def test_at_equal_utilisation_the_longest_idle_agent_wins_then_the_better_skill_fit():
    recent = agent("recent", skills={"billing": 3}, idle_minutes=1)
    long_idle = agent("long-idle", skills={"billing": 3}, idle_minutes=50)
    assert choose_agent([recent, long_idle], ticket("billing"), now=T0).agent.id == "long-idle"

    expert = agent("expert", skills={"billing": 5}, idle_minutes=30)
    novice = agent("novice", skills={"billing": 1}, idle_minutes=30)
    assert choose_agent([novice, expert], ticket("billing"), now=T0).agent.id == "expert"


def test_a_full_tie_goes_to_the_smallest_id_whatever_the_order_of_the_candidates():
    tied = [agent(agent_id, skills={"billing": 3}, idle_minutes=30) for agent_id in ("bob", "ada2", "ada")]

    assert choose_agent(tied, ticket("billing"), now=T0).agent.id == "ada"
    assert choose_agent(tied[::-1], ticket("billing"), now=T0).agent.id == "ada"


def test_an_agent_copied_with_other_languages_is_matched_on_those():
    german = agent("a", languages=["de-AT"])
    assert can_take(german, ticket(language="de"))

    english = german.model_copy(update={"languages": ["en-GB"]})

    assert can_take(english, ticket(language="en")) and not can_take(english, ticket(language="de"))


def test_affinity_to_the_customers_previous_agent_outweighs_a_small_load_difference():
    previous = agent("previous", capacity=4, load=1)
    fresh = agent("fresh", capacity=4)
    chosen = choose_agent([fresh, previous], ticket(previous_agent_id="previous"), now=T0, affinity_agent_id="previous")

    assert chosen.agent.id == "previous" and "affinity" in chosen.reason
    assert choose_agent([fresh, previous], ticket(), now=T0).agent.id == "fresh"


def test_affinity_comes_from_the_hint_or_from_routing_memory_inside_the_window():
    window = timedelta(days=7)
    assert affinity_agent("hinted", None, T0, window) == "hinted"
    assert affinity_agent(None, ("remembered", T0 - timedelta(days=2)), T0, window) == "remembered"
    assert affinity_agent(None, ("remembered", T0 - timedelta(days=8)), T0, window) is None
    assert affinity_agent(None, None, T0, window) is None


def test_the_window_applies_to_the_hint_too_when_routing_remembers_when_that_agent_helped():
    window = timedelta(days=7)
    assert affinity_agent("ada", ("ada", T0 - timedelta(days=8)), T0, window) is None
    assert affinity_agent("ada", ("ada", T0 - timedelta(days=1)), T0, window) == "ada"
    assert affinity_agent("ada", ("bob", T0 - timedelta(days=8)), T0, window) == "ada", "the hint knows better"


def test_with_a_pool_tickets_on_other_channels_count_as_utilisation():
    busy_elsewhere = Agent(id="a-busy", name="a", skills={}, capacity=2, status=Presence.AVAILABLE, load=1,
                           load_by_channel={"email": 1})
    free = Agent(id="b-free", name="b", skills={}, capacity=2, status=Presence.AVAILABLE)

    assert busy_elsewhere.utilisation("web") == 0.5
    assert choose_agent([busy_elsewhere, free], ticket(), now=T0).agent.id == "b-free"


def test_the_score_parts_are_bounded_and_utilisation_counts_against():
    requirements = EscalationPolicy().requirements(ticket("billing"), T0)
    empty = score(agent("a", skills={"billing": 1}, capacity=4), requirements, T0, affinity_agent_id=None)
    half = score(agent("b", skills={"billing": 1}, capacity=4, load=2), requirements, T0, affinity_agent_id=None)
    assert empty.utilisation == 0 and half.utilisation == 0.5 and half.total < empty.total
    assert 0 <= empty.skill_fit <= 1


def test_nobody_is_chosen_when_no_agent_qualifies():
    assert choose_agent([agent("a", skills={"legal": 1})], ticket("billing")) is None


def test_the_queue_serves_priority_first_then_age():
    old_normal = ticket(priority=Priority.NORMAL, age_minutes=30)
    new_urgent = ticket(priority=Priority.URGENT, age_minutes=1)
    new_normal = ticket(priority=Priority.NORMAL, age_minutes=1)

    assert sorted([new_normal, old_normal, new_urgent], key=queue_order) == [new_urgent, old_normal, new_normal]


def test_an_sla_warning_moves_a_ticket_up_one_priority_step_ahead_of_older_tickets_there():
    old_high = ticket(priority=Priority.HIGH, age_minutes=30, ticket_id="old-high")
    warned_normal = ticket(priority=Priority.NORMAL, age_minutes=40, sla_warned=True, ticket_id="warned")
    old_normal = ticket(priority=Priority.NORMAL, age_minutes=60, ticket_id="old-normal")
    urgent = ticket(priority=Priority.URGENT, age_minutes=1, ticket_id="urgent")

    ordered = [t.ticket_id for t in sorted([old_normal, old_high, warned_normal, urgent], key=queue_key)]
    assert ordered == ["urgent", "warned", "old-high", "old-normal"]


def test_a_reopened_ticket_returns_to_its_previous_agent_only_when_they_are_available_with_room():
    assert can_return_to(agent("a"), "web")
    assert not can_return_to(agent("a", status=Presence.AWAY), "web")
    assert not can_return_to(agent("a", capacity=1, load=1), "web")
    assert not can_return_to(None, "web")


def test_a_profile_change_keeps_the_tickets_an_agent_already_holds():
    holding = agent("a", skills={"billing": 1}, capacity=3, load=2)

    updated = holding.with_profile(AgentProfile(name="A", skills={"legal": 2}, capacity=1, status=Presence.AWAY), T0)

    assert (updated.load, updated.capacity, updated.free) == (2, 1, 0)
    assert updated.version == holding.version + 1
    assert updated.status is Presence.AWAY and updated.tier is Tier.L1, "validated, so the domain's checks hold"
    back = holding.with_profile(AgentProfile(name="A", skills={"legal": 2}, capacity=3, status=Presence.AVAILABLE), T0)
    assert can_take(back, ticket("legal"))


def test_a_profile_takes_languages_team_tier_and_capacity_per_channel():
    profile = AgentProfile.model_validate(
        {"name": "A", "skills": {"billing": 3}, "languages": ["de", "en"], "team": "payments", "tier": "l2",
         "capacity": {"chat": 3, "email": 10, "phone": 1}, "status": "available"}
    )
    created = Agent.new("a", profile, T0)
    assert created.tier is Tier.L2 and created.team == "payments" and created.languages == ["de", "en"]
    assert created.free_by_channel == {"web": 0, "email": 10, "chat": 3, "social": 0, "phone": 1, "api": 0}


@pytest.mark.parametrize(
    "profile",
    [{"name": "A", "capacity": -1}, {"name": "A", "capacity": 1, "skills": {"billing": 0}},
     {"name": "A", "capacity": 1, "skills": {"billing": 6}}, {"name": "", "capacity": 1},
     {"name": "A", "capacity": 1, "status": "busy"}, {"name": "A", "capacity": {"chat": -1}},
     {"name": "A", "capacity": {"fax": 1}}, {"name": "A", "capacity": 1, "tier": "l3"},
     {"name": "A", "capacity": 1, "skills": {"Bad Skill": 1}}, {"name": "A", "capacity": 1, "languages": ["d e"]}],
)
def test_invalid_profiles_are_refused(profile):
    with pytest.raises(ValueError):
        AgentProfile.model_validate(profile)


# --- presence: only a newer change applies ---------------------------------------------------------


def test_a_status_change_applies_only_if_newer_than_the_presence_in_force():
    assert supersedes(T0 + timedelta(seconds=1), T0)
    assert not supersedes(T0, T0), "the same instant is not newer: the presence in force stays"
    assert not supersedes(T0 - timedelta(minutes=5), T0), "a delayed or replayed event"
    assert supersedes(T0 - timedelta(days=365), None), "an agent stored before routing kept the instant"


def test_an_event_from_a_clock_running_ahead_counts_as_made_when_routing_received_it():
    assert presence_instant(T0 + timedelta(hours=1), T0) == T0
    assert presence_instant(T0 - timedelta(seconds=3), T0) == T0 - timedelta(seconds=3)


def test_a_profile_states_the_presence_as_of_when_it_is_written():
    profile = AgentProfile(name="A", capacity=1, status=Presence.AVAILABLE)
    later = T0 + timedelta(minutes=1)

    assert Agent.new("a", profile, T0).presence_changed_at == T0
    assert Agent.new("a", profile, T0).with_profile(profile, later).presence_changed_at == later
    assert agent("legacy").presence_changed_at is None


# --- declines: a cooldown, then the agent may be offered the ticket again -----------------------------


COOLDOWN = timedelta(seconds=300)


def test_an_agent_who_declined_is_not_offered_the_ticket_again_until_the_cooldown_ends():
    declined = ticket("billing", ticket_id="T-declined").declined("ada", T0)
    ada = agent("ada", skills={"billing": 1})

    def admitted(now):
        return EscalationPolicy().requirements(declined, now, COOLDOWN).admits(ada)

    assert not admitted(T0) and not admitted(T0 + COOLDOWN - timedelta(seconds=1))
    assert admitted(T0 + COOLDOWN)
    assert EscalationPolicy().requirements(declined, T0, timedelta(0)).admits(ada), "no cooldown configured"


def test_while_someone_else_is_eligible_a_decliner_is_passed_over_even_after_the_cooldown():
    declined = ticket("billing").declined("ada", T0)
    ada = agent("ada", skills={"billing": 5}, capacity=4)  # the better score
    bob = agent("bob", skills={"billing": 1}, capacity=4, load=2)
    after = T0 + COOLDOWN
    requirements = EscalationPolicy().requirements(declined, after, COOLDOWN)

    assert choose_agent([ada, bob], declined, requirements, after).agent.id == "bob"
    alone = choose_agent([ada], declined, requirements, after)
    assert alone.agent.id == "ada" and "declined it before" in alone.reason
    assert choose_agent([ada], declined, EscalationPolicy().requirements(declined, T0, COOLDOWN), T0) is None


def test_the_latest_decline_counts_and_the_ticket_is_looked_at_again_when_the_next_cooldown_ends():
    declined = ticket().declined("ada", T0).declined("bob", T0 + timedelta(seconds=60))
    again = declined.declined("ada", T0 + timedelta(seconds=120))

    assert declined.declines_lapse_at(T0, COOLDOWN) == T0 + COOLDOWN
    assert declined.declines_lapse_at(T0 + COOLDOWN, COOLDOWN) == T0 + timedelta(seconds=360), "bob's is next"
    assert declined.declines_lapse_at(T0 + timedelta(seconds=360), COOLDOWN) is None
    assert again.declines["ada"] == T0 + timedelta(seconds=120)
    assert again.cooling_down(T0 + COOLDOWN, COOLDOWN) == {"ada", "bob"}


# --- the routed ticket's transitions --------------------------------------------------------------

ESCALATION = EscalationPolicy.model_validate({"steps": [
    {"after_seconds": 60, "action": "relax_skill_level"},
    {"after_seconds": 120, "action": "widen_to_l2"},
    {"after_seconds": 3600, "action": "supervisor_queue"},
]})


def routed(state=RoutedTicketState.WAITING, **fields) -> RoutedTicket:
    queued = RoutedTicket.queue(
        ticket("billing", ticket_id="T-1", language="pt-BR"), ESCALATION, correlation_id="corr-1", causation_id="ev-1"
    )
    return queued.model_copy(update={"state": state, **fields})


def test_a_ticket_joins_the_queue_waiting_matched_on_its_primary_language_its_escalation_scheduled():
    queued = routed()
    assert (queued.state, queued.language, queued.queued_at, queued.version) == (
        RoutedTicketState.WAITING, "pt", T0, 1)
    assert queued.next_escalation_at == T0 + timedelta(seconds=60) and queued.correlation_id == "corr-1"


def test_an_offer_reserves_the_ticket_for_an_agent_and_is_stored_only_if_nobody_took_it_meanwhile():
    offer = routed().offer("ada", "best of 1", "o-1", T0, timedelta(seconds=120))

    assert offer.unchanged == ("state", "version") and offer.before.state is RoutedTicketState.WAITING
    assert (offer.after.state, offer.after.assignee_id, offer.after.offer_id, offer.after.offer_ids) == (
        RoutedTicketState.OFFERED, "ada", "o-1", ["o-1"])
    assert offer.facts == (
        TicketOffered(ticket_id="T-1", offer_id="o-1", agent_id="ada", expires_at=T0 + timedelta(seconds=120)),)
    assert offer.after.slot_holder == "ada"


def test_an_accepted_offer_assigns_the_ticket_and_says_so_twice():
    offered = routed().offer("ada", "best of 1", "o-1", T0, timedelta(seconds=120)).after
    accepted = offered.accept("o-1", T0 + timedelta(seconds=5))

    at = T0 + timedelta(seconds=5)
    assert accepted.unchanged == ("state", "offer_id")
    assert (accepted.after.state, accepted.after.offer_id, accepted.after.assigned_at) == (
        RoutedTicketState.ASSIGNED, None, at)
    assert accepted.facts == (
        TicketOfferAnswered(ticket_id="T-1", offer_id="o-1", agent_id="ada", outcome=OfferOutcome.ACCEPTED,
                            answered_at=at),
        TicketAssigned(ticket_id="T-1", agent_id="ada", reason="accepted an offer: best of 1", assigned_at=at),
    )


@pytest.mark.parametrize(
    ("offer_id", "after_seconds", "message"),
    [("o-old", 5, "offer o-old is no longer open"), ("o-1", 120, "offer o-1 expired")],
)
def test_an_offer_answered_elsewhere_or_past_its_expiry_is_closed(offer_id, after_seconds, message):
    offered = routed().offer("ada", "best of 1", "o-1", T0, timedelta(seconds=120)).after
    with pytest.raises(OfferClosed, match=message):
        offered.accept(offer_id, T0 + timedelta(seconds=after_seconds))
    with pytest.raises(OfferClosed, match=message):
        offered.reject(offer_id, T0 + timedelta(seconds=after_seconds), COOLDOWN)


@pytest.mark.parametrize("outcome", [OfferOutcome.REJECTED, OfferOutcome.EXPIRED])
def test_a_returned_offer_puts_the_ticket_back_and_keeps_the_agent_away_for_the_cooldown(outcome):
    offered = routed().offer("ada", "best of 1", "o-1", T0, timedelta(seconds=120)).after
    at = T0 + timedelta(seconds=10)
    returned = offered.reject("o-1", at, COOLDOWN) if outcome is OfferOutcome.REJECTED else offered.return_offer(
        outcome, at, COOLDOWN)

    after = returned.after
    assert (after.state, after.assignee_id, after.offer_id, after.offer_ids) == (
        RoutedTicketState.WAITING, None, None, ["o-1"])
    assert after.declines == {"ada": at} and after.decline_lapse_at == at + COOLDOWN
    assert after.queued_at == T0, "its place in the queue is kept"
    assert returned.facts == (
        TicketOfferAnswered(ticket_id="T-1", offer_id="o-1", agent_id="ada", outcome=outcome, answered_at=at),)
    assert returned.unchanged == ("state", "offer_id")


def test_assigning_takes_a_waiting_ticket_only():
    assigned = routed().assign("ada", "best of 3", T0)
    assert assigned.facts == (TicketAssigned(ticket_id="T-1", agent_id="ada", reason="best of 3", assigned_at=T0),)
    assert (assigned.after.state, assigned.after.slot_holder) == (RoutedTicketState.ASSIGNED, "ada")
    with pytest.raises(InvalidTransition, match="T-1 is assigned, not waiting"):
        assigned.after.assign("bob", "best of 3", T0)


def test_an_agent_leaving_sends_an_assigned_ticket_back_with_its_original_age_and_a_fresh_escalation():
    assigned = routed(RoutedTicketState.ASSIGNED, assignee_id="ada", escalation_step=2)
    later = T0 + timedelta(minutes=30)
    unassigned = assigned.unassign(Presence.OFFLINE, later, ESCALATION)

    after = unassigned.after
    assert (after.state, after.assignee_id, after.previous_assignee_id) == (RoutedTicketState.WAITING, None, "ada")
    assert (after.created_at, after.queued_at, after.escalation_step) == (T0, later, 0)
    assert after.next_escalation_at == later + timedelta(seconds=60)
    assert unassigned.facts == (TicketUnassigned(
        ticket_id="T-1", agent_id="ada", reason="agent went offline; back to the queue with its original age",
        unassigned_at=later),)
    assert unassigned.unchanged == ("state", "assignee_id")
    assert routed().unassign(Presence.OFFLINE, later, ESCALATION) is None, "only an assigned ticket"


def test_a_finished_ticket_leaves_the_queue_or_its_agent_once():
    held = routed(RoutedTicketState.ASSIGNED, assignee_id="ada")
    finished = held.finish("solved", T0)
    assert (finished.after.state, finished.after.finished_as, finished.after.slot_holder) == (
        RoutedTicketState.DONE, "solved", None)
    assert held.slot_holder == "ada" and finished.facts == ()
    assert finished.after.finish("closed", T0) is None


def test_a_reopened_ticket_waits_for_its_previous_agent_with_its_declines_forgotten():
    done = routed(RoutedTicketState.DONE, assignee_id="ada", declines={"bob": T0})
    later = T0 + timedelta(hours=1)

    reopened = done.reopen(None, later, ESCALATION).after
    assert (reopened.state, reopened.assignee_id, reopened.return_to) == (RoutedTicketState.WAITING, None, "ada")
    assert (reopened.declines, reopened.decline_lapse_at, reopened.queued_at) == ({}, None, later)
    assert done.reopen("cid", later, ESCALATION).after.return_to == "cid", "the event names the previous agent"
    assert routed().reopen("ada", later, ESCALATION) is None, "only a done ticket reopens"


def test_an_sla_warning_moves_a_ticket_up_once_and_only_while_it_waits_or_is_offered():
    warned = routed().warn_sla()
    assert warned.after.urgency == routed().urgency + 1 and warned.unchanged == ()
    assert warned.after.warn_sla() is None
    assert routed(RoutedTicketState.ASSIGNED).warn_sla() is None
    assert routed().reprioritise(Priority.URGENT).after.urgency == Priority.URGENT.rank


def test_escalation_applies_the_steps_that_came_due_one_fact_each_and_schedules_the_next():
    escalated = routed().escalate(T0 + timedelta(seconds=150), ESCALATION)
    assert [(fact.step, fact.action) for fact in escalated.facts] == [(1, "relax_skill_level"), (2, "widen_to_l2")]
    assert all(isinstance(fact, TicketEscalated) for fact in escalated.facts)
    assert (escalated.after.escalation_step, escalated.after.next_escalation_at) == (2, T0 + timedelta(seconds=3600))
    assert escalated.unchanged == ("state", "escalation_step")

    early = routed(escalation_step=2).escalate(T0 + timedelta(seconds=150), ESCALATION)
    assert (early.facts, early.after.next_escalation_at, early.unchanged) == (
        (), T0 + timedelta(seconds=3600), ("state",))

"""Routing's use cases on a fake unit of work: queue order, placement, offers, escalation, presence.

The fake repositories keep routing's tickets and agents in memory and offer the methods the use
cases call on the MongoDB ones, no more; a transition is stored only while the ticket still has
the values it started from, as the conditional update does.
"""

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from services.routing.bootstrap import RoutingUseCases, routing_use_cases
from services.routing.domain import (
    Agent,
    AgentProfile,
    EscalationPolicy,
    Mode,
    OfferClosed,
    Presence,
    Requirements,
    RoutedTicket,
    RoutedTicketState,
    RoutingConfig,
    Transition,
    queue_key,
)
from services.routing.metrics import RoutingMetrics
from shared.clock import from_ms, utc_now
from shared.consumer import RejectedEvent
from shared.envelope import new_event
from shared.events import (
    AgentStatusChanged,
    Customer,
    OfferOutcome,
    SlaWarning,
    TicketCreated,
    TicketReopened,
    TicketSolved,
)
from tests.fakes import FakeTransaction, FakeUnitOfWork


class FakeTickets:
    def __init__(self, stored: dict[str, RoutedTicket]) -> None:
        self._stored = stored

    async def get(self, ticket_id: str) -> RoutedTicket | None:
        return self._stored.get(ticket_id)

    async def preload(self, ticket_ids) -> None:
        return None

    async def enqueue(self, ticket: RoutedTicket) -> bool:
        return self._stored.setdefault(ticket.ticket_id, ticket) is ticket

    async def apply(self, transition: Transition) -> RoutedTicket | None:
        return self._store(transition)

    def claim(self, transition: Transition) -> RoutedTicket:
        claimed = self._store(transition)
        assert claimed is not None, "a stale claim fails the whole transaction"
        return claimed

    def _store(self, transition: Transition) -> RoutedTicket | None:
        """As the conditional update: only while the stored ticket has the values the transition started from."""
        stored = self._stored[transition.before.ticket_id]
        if any(getattr(stored, name) != getattr(transition.before, name) for name in transition.unchanged):
            return None
        after = self._stored[stored.ticket_id] = transition.after.model_copy(update={"version": stored.version + 1})
        return after

    def _in(self, state: RoutedTicketState) -> list[RoutedTicket]:
        return [ticket for ticket in self._stored.values() if ticket.state is state]

    async def waiting(self, limit: int) -> list[RoutedTicket]:
        return sorted(self._in(RoutedTicketState.WAITING), key=queue_key)[:limit]

    async def waiting_for(self, agent: Agent, requirements_of, limit: int) -> list[RoutedTicket]:
        admitted = [ticket for ticket in await self.waiting(limit) if requirements_of(ticket).admits(agent)]
        return admitted[: agent.free]

    async def held_by(self, agent_id: str, states) -> list[RoutedTicket]:
        return [ticket for ticket in self._stored.values() if ticket.assignee_id == agent_id and ticket.state in states]

    async def by_offer(self, offer_id: str) -> RoutedTicket | None:
        return next((ticket for ticket in self._stored.values() if offer_id in ticket.offer_ids), None)

    async def offers_of(self, agent_id: str) -> list[RoutedTicket]:
        return await self.held_by(agent_id, [RoutedTicketState.OFFERED])

    async def offers_expired(self, now_ms: int, limit: int) -> list[RoutedTicket]:
        offered = self._in(RoutedTicketState.OFFERED)
        return [ticket for ticket in offered if ticket.offer_expires_at <= from_ms(now_ms)][:limit]

    async def declines_lapsed(self, now_ms: int, limit: int) -> list[RoutedTicket]:
        waiting = self._in(RoutedTicketState.WAITING)
        return [t for t in waiting if t.decline_lapse_at and t.decline_lapse_at <= from_ms(now_ms)][:limit]

    async def escalation_due(self, now_ms: int, limit: int) -> list[RoutedTicket]:
        waiting = self._in(RoutedTicketState.WAITING)
        return [t for t in waiting if t.next_escalation_at and t.next_escalation_at <= from_ms(now_ms)][:limit]


class FakeAgents:
    def __init__(self, stored: dict[str, Agent]) -> None:
        self._stored = stored

    async def get(self, agent_id: str) -> Agent | None:
        return self._stored.get(agent_id)

    async def create(self, agent: Agent) -> bool:
        return self._stored.setdefault(agent.id, agent) is agent

    async def replace(self, agent: Agent, *, expected_version: int) -> bool:
        if self._stored[agent.id].version != expected_version:
            return False
        self._stored[agent.id] = agent
        return True

    async def candidates(self, requirements: Requirements, *, headroom: int = 0) -> list[Agent]:
        return sorted((a for a in self._stored.values() if requirements.admits(a)), key=lambda agent: -agent.free)

    async def anyone_free(self) -> bool:
        return any(agent.status is Presence.AVAILABLE and agent.free > 0 for agent in self._stored.values())

    def claim_slot(self, agent: Agent, channel: str) -> Agent:
        return self._load(agent.id, channel, 1)

    async def release_slot(self, agent_id: str, channel: str) -> Agent:
        return self._load(agent_id, channel, -1)

    def _load(self, agent_id: str, channel: str, step: int) -> Agent:
        agent = self._stored[agent_id]
        by_channel = {**agent.load_by_channel, channel: agent.load_by_channel.get(channel, 0) + step}
        changed = self._stored[agent_id] = agent.model_copy(
            update={"load": agent.load + step, "load_by_channel": by_channel, "version": agent.version + 1}
        )
        return changed

    async def set_status(self, agent_id: str, status: Presence, at, *, only_if_newer: bool = False):
        agent = self._stored.get(agent_id)
        if agent is None or only_if_newer and agent.presence_changed_at and agent.presence_changed_at >= at:
            return None
        self._stored[agent_id] = agent.model_copy(update={"status": status, "presence_changed_at": at})
        return self._stored[agent_id], agent


class FakeAffinities:
    def __init__(self, stored: dict[str, tuple[str, int]]) -> None:
        self._stored = stored

    def remember(self, customer_id: str, agent_id: str, at_ms: int) -> None:
        self._stored[customer_id] = (agent_id, at_ms)

    async def preload(self, customer_ids) -> None:
        return None

    async def last_agent(self, customer_id: str) -> tuple[str, int] | None:
        return self._stored.get(customer_id)


class FakePlanning:
    """The history's buckets, summed as MongoDB's `$inc` upserts would."""

    def __init__(self, stored: dict[str, dict]) -> None:
        self._stored = stored

    def record(self, increments) -> None:
        for increment in increments:
            bucket = self._stored.setdefault(increment.key, {
                "bucket_ms": increment.bucket_ms, "channel": increment.channel, "skills": increment.skills})
            for name, value in increment.counts.items():
                *path, leaf = name.split(".")
                target = bucket
                for part in path:
                    target = target.setdefault(part, {})
                target[leaf] = target.get(leaf, 0) + value


class FakeRoutingTransaction(FakeTransaction):
    def __init__(self, tickets: dict, agents: dict, affinities: dict, history: dict) -> None:
        super().__init__()
        self.tickets = FakeTickets(tickets)
        self.agents = FakeAgents(agents)
        self.affinities = FakeAffinities(affinities)
        self.planning = FakePlanning(history)


class Routed:
    """Routing's use cases on a fake unit of work, and what a test looks at: stored tickets, agents, events."""

    def __init__(self, config: RoutingConfig = RoutingConfig()) -> None:
        self.tickets: dict[str, RoutedTicket] = {}
        self.agents: dict[str, Agent] = {}
        self.affinities: dict[str, tuple[str, int]] = {}
        self.history: dict[str, dict] = {}
        self.uow = FakeUnitOfWork(
            lambda: FakeRoutingTransaction(self.tickets, self.agents, self.affinities, self.history)
        )
        self.metrics = RoutingMetrics(CollectorRegistry())
        self.use_cases: RoutingUseCases = routing_use_cases(self.uow, "switchboard/routing", self.metrics, config)

    async def agent(self, agent_id: str, **profile) -> Agent:
        profile = {"name": agent_id, "skills": {"billing": 2}, "capacity": 1, "status": "available", **profile}
        return await self.use_cases.agents.put_agent(agent_id, AgentProfile(**profile))

    async def created(self, ticket_id: str, *, priority="normal", age_minutes=0, skills=("billing",), levels=None,
                      customer_id=None) -> None:
        """What the consumer does with a `ticket.created`, then the dispatcher's wake-up."""
        event = new_event(
            TicketCreated(ticket_id=ticket_id, channel="chat", customer=Customer(id=customer_id or f"c-{ticket_id}"),
                          subject="Help", priority=priority, required_skills=list(skills),
                          required_skill_levels=levels or {}, created_at=utc_now() - timedelta(minutes=age_minutes)),
            source="tests", subject=ticket_id,
        )
        await self.uow.run(lambda tx: self.use_cases.tickets.on_ticket_created(tx, event))
        await self.use_cases.dispatcher.drain(ticket_ids={ticket_id}, sweep=False)

    async def consume(self, handler, payload, subject: str) -> None:
        event = new_event(payload, source="tests", subject=subject)
        await self.uow.run(lambda tx: handler(tx, event))

    def published(self, event_type: str) -> list[dict]:
        return [event.data.model_dump() for event in self.uow.events_of_type(f"support.ticket.{event_type}.v1")]

    def holder(self, ticket_id: str) -> tuple[str, str | None]:
        ticket = self.tickets[ticket_id]
        return ticket.state.value, ticket.assignee_id


async def test_one_batch_is_served_by_urgency_then_age_not_in_arrival_order():
    routed = Routed()
    await routed.agent("solo", capacity=1, status="away")
    batch = [("T-new-low", "low", 1), ("T-old-normal", "normal", 30), ("T-urgent", "urgent", 2),
             ("T-new-normal", "normal", 5)]
    for ticket_id, priority, age in batch:
        await routed.created(ticket_id, priority=priority, age_minutes=age)
    assert routed.published("assigned") == []

    await routed.use_cases.agents.set_presence("solo", Presence.AVAILABLE)
    await routed.consume(routed.use_cases.tickets.on_solved, TicketSolved(ticket_id="T-urgent", solved_at=utc_now()),
                         "T-urgent")
    await routed.use_cases.dispatcher.drain(agent_ids={"solo"}, sweep=False)

    assert [event["ticket_id"] for event in routed.published("assigned")] == ["T-urgent", "T-old-normal"]
    assert routed.holder("T-urgent") == ("done", "solo") and routed.agents["solo"].load == 1
    assert [routed.holder(t)[0] for t in ("T-new-normal", "T-new-low")] == ["waiting", "waiting"]


async def test_an_sla_warning_moves_a_waiting_ticket_ahead_of_older_ones_of_its_priority():
    routed = Routed()
    await routed.agent("solo", status="away")
    await routed.created("T-old", age_minutes=30)
    await routed.created("T-warned", age_minutes=1)
    await routed.consume(routed.use_cases.tickets.on_sla_warning,
                         SlaWarning(ticket_id="T-warned", metric="first_reply", target_seconds=3600, threshold=0.75,
                                    due_at=utc_now(), remaining_seconds=900, warned_at=utc_now()),
                         "T-warned")

    await routed.use_cases.agents.set_presence("solo", Presence.AVAILABLE)

    assert [event["ticket_id"] for event in routed.published("assigned")] == ["T-warned"]


async def test_the_ticket_goes_to_a_skilled_agent_with_room_least_utilised_first():
    routed = Routed()
    await routed.agent("a-junior", skills={"billing": 1}, capacity=5)
    await routed.agent("b-small", skills={"billing": 3}, capacity=1, team="billing-desk")
    await routed.agent("c-large", skills={"billing": 3}, capacity=4)
    await routed.agent("d-large", skills={"billing": 3}, capacity=4)
    for ticket_id in ("T-1", "T-2", "T-3"):
        await routed.created(ticket_id, levels={"billing": 2})

    assigned = routed.published("assigned")
    assert [event["agent_id"] for event in assigned] == ["b-small", "c-large", "d-large"], (
        "never the junior; equals by id; never past capacity; then the least utilised")
    assert "skills: billing 3>=2" in assigned[0]["reason"]
    assert [event["team"] for event in assigned] == ["billing-desk", None, None], "the assignee's team, for reports"
    assert [agent.load for agent in routed.agents.values()] == [0, 1, 1, 1]


async def test_the_customers_previous_agent_gets_their_next_ticket_and_routing_remembers_who():
    routed = Routed()
    await routed.agent("ann", capacity=3)
    await routed.agent("bob", capacity=3)
    await routed.created("T-first", customer_id="cust-1")
    [first] = routed.published("assigned")
    other = "bob" if first["agent_id"] == "ann" else "ann"
    await routed.created("T-other", customer_id="cust-2")  # the first agent is now the more utilised one

    await routed.created("T-again", customer_id="cust-1")

    assigned = {event["ticket_id"]: event for event in routed.published("assigned")}
    assert assigned["T-other"]["agent_id"] == other
    assert assigned["T-again"]["agent_id"] == first["agent_id"] and "affinity" in assigned["T-again"]["reason"]
    assert routed.affinities["cust-1"][0] == first["agent_id"]


async def test_an_accepted_offer_assigns_the_ticket_and_keeps_the_slot():
    routed = Routed(RoutingConfig(mode=Mode.OFFER))
    await routed.agent("ann", team="billing-desk")
    await routed.created("T-offer")
    [offered] = routed.published("offered")
    assert routed.holder("T-offer") == ("offered", "ann") and routed.agents["ann"].load == 1

    answer = await routed.use_cases.offers.answer_offer(offered["offer_id"], accept=True)

    assert (answer.outcome, answer.agent_id) == (OfferOutcome.ACCEPTED, "ann")
    assert [e["outcome"] for e in routed.published("offer_answered")] == [OfferOutcome.ACCEPTED]
    [assigned] = routed.published("assigned")
    assert assigned["reason"].startswith("accepted an offer: ") and routed.holder("T-offer") == ("assigned", "ann")
    assert assigned["team"] == "billing-desk", "for insights' reports by team"
    assert routed.agents["ann"].load == 1


async def test_a_rejected_offer_goes_to_the_next_agent_and_never_back_within_the_cooldown():
    routed = Routed(RoutingConfig(mode=Mode.OFFER))
    await routed.agent("ann")
    await routed.created("T-offer")
    [first] = routed.published("offered")
    await routed.agent("bob", status="away")

    await routed.use_cases.offers.answer_offer(first["offer_id"], accept=False)
    assert routed.holder("T-offer") == ("waiting", None), "ann declined and bob is away: it waits"
    assert routed.tickets["T-offer"].cooling_down(utc_now(), timedelta(seconds=300)) == {"ann"}
    await routed.use_cases.agents.set_presence("bob", Presence.AVAILABLE)

    assert [event["agent_id"] for event in routed.published("offered")] == ["ann", "bob"]
    assert [e["outcome"] for e in routed.published("offer_answered")] == [OfferOutcome.REJECTED]
    assert (routed.agents["ann"].load, routed.agents["bob"].load) == (0, 1)


async def test_an_offer_past_its_timeout_is_closed_and_the_sweep_hands_the_ticket_back():
    routed = Routed(RoutingConfig(mode=Mode.OFFER, offer_timeout=timedelta(0)))
    await routed.agent("ann")
    await routed.created("T-offer")
    [offered] = routed.published("offered")

    with pytest.raises(OfferClosed, match="expired"):
        await routed.use_cases.offers.answer_offer(offered["offer_id"], accept=True)
    assert await routed.use_cases.offers.expire_offers() == 1

    assert [e["outcome"] for e in routed.published("offer_answered")] == [OfferOutcome.EXPIRED]
    assert routed.holder("T-offer") == ("waiting", None) and routed.agents["ann"].load == 0
    assert list(routed.tickets["T-offer"].declines) == ["ann"]
    assert await routed.use_cases.offers.expire_offers() == 0


async def test_a_ticket_whose_decline_cooled_down_is_revisited_and_offered_again_to_the_only_agent():
    routed = Routed(RoutingConfig(mode=Mode.OFFER, decline_cooldown=timedelta(seconds=300)))
    await routed.agent("ann")
    await routed.created("T-offer")
    [first] = routed.published("offered")
    await routed.use_cases.offers.answer_offer(first["offer_id"], accept=False)
    assert routed.holder("T-offer") == ("waiting", None), "not offered again to the agent who just declined"
    assert await routed.use_cases.offers.revisit_declined() == 0

    cooled = utc_now() - timedelta(seconds=301)  # as if the cooldown had passed since
    routed.tickets["T-offer"] = routed.tickets["T-offer"].model_copy(
        update={"declines": {"ann": cooled}, "decline_lapse_at": cooled + timedelta(seconds=300)})
    assert await routed.use_cases.offers.revisit_declined() == 1
    await routed.use_cases.dispatcher.drain(ticket_ids={"T-offer"}, sweep=False)

    assert [e["agent_id"] for e in routed.published("offered")] == ["ann", "ann"]
    assert "declined it before" in routed.tickets["T-offer"].reason
    assert routed.tickets["T-offer"].decline_lapse_at is None and await routed.use_cases.offers.revisit_declined() == 0


async def test_due_escalation_steps_publish_one_event_each_and_the_relaxed_ticket_is_placed():
    policy = EscalationPolicy.model_validate({"steps": [
        {"after_seconds": 60, "action": "relax_skill_level", "levels": 1},
        {"after_seconds": 90, "action": "widen_to_l2"},
        {"after_seconds": 3600, "action": "supervisor_queue"},
    ]})
    routed = Routed(RoutingConfig(policy=policy))
    await routed.agent("l2-agent", skills={"billing": 2}, tier="l2")
    await routed.created("T-hard", age_minutes=2, levels={"billing": 3})
    assert routed.holder("T-hard") == ("waiting", None)

    assert await routed.use_cases.escalation.escalate() == 2
    await routed.use_cases.dispatcher.drain(ticket_ids={"T-hard"}, sweep=False)

    assert [(e["step"], e["action"]) for e in routed.published("escalated")] == [
        (1, "relax_skill_level"), (2, "widen_to_l2")]
    assert routed.holder("T-hard") == ("assigned", "l2-agent")
    assert await routed.use_cases.escalation.escalate() == 0, "the next step is an hour away"


async def test_an_agent_going_offline_hands_back_their_tickets_with_their_age_and_another_takes_them():
    routed = Routed()
    await routed.agent("ann")
    # Available for a while: instants count in milliseconds, and an event of the put's own millisecond is stale.
    routed.agents["ann"] = routed.agents["ann"].model_copy(update={"presence_changed_at": utc_now() - timedelta(seconds=5)})
    await routed.created("T-held", age_minutes=10)
    await routed.agent("bob", status="away")

    await routed.consume(routed.use_cases.agents.on_agent_status_changed,
                         AgentStatusChanged(agent_id="ann", status="offline", changed_at=utc_now()), "ann")
    [unassigned] = routed.published("unassigned")
    assert (unassigned["agent_id"], unassigned["reason"]) == (
        "ann", "agent went offline; back to the queue with its original age")
    assert routed.holder("T-held") == ("waiting", None) and routed.agents["ann"].load == 0
    await routed.use_cases.agents.set_presence("bob", Presence.AVAILABLE)

    assert routed.holder("T-held") == ("assigned", "bob")
    assert routed.tickets["T-held"].created_at < utc_now() - timedelta(minutes=9), "its original age"


async def test_going_away_keeps_assigned_tickets_unless_configured_and_a_stale_status_event_is_ignored():
    routed = Routed()
    await routed.agent("ann")
    await routed.created("T-held")
    await routed.use_cases.agents.set_presence("ann", Presence.AWAY)
    stale = AgentStatusChanged(agent_id="ann", status="offline", changed_at=utc_now() - timedelta(hours=1))
    await routed.consume(routed.use_cases.agents.on_agent_status_changed, stale, "ann")

    assert routed.holder("T-held") == ("assigned", "ann") and routed.published("unassigned") == []
    assert routed.agents["ann"].status is Presence.AWAY
    assert routed.metrics.stale_presence_events._value.get() == 1


async def test_a_solved_ticket_frees_its_slot_and_a_reopened_one_goes_back_to_its_previous_agent():
    routed = Routed()
    await routed.agent("ann")
    await routed.created("T-1")
    await routed.consume(routed.use_cases.tickets.on_solved, TicketSolved(ticket_id="T-1", solved_at=utc_now()), "T-1")
    await routed.consume(routed.use_cases.tickets.on_solved, TicketSolved(ticket_id="T-1", solved_at=utc_now()), "T-1")
    assert routed.holder("T-1") == ("done", "ann") and routed.agents["ann"].load == 0
    await routed.agent("bob", capacity=5, skills={"billing": 5})

    await routed.consume(routed.use_cases.tickets.on_reopened,
                         TicketReopened(ticket_id="T-1", previous_assignee_id="ann", reopened_at=utc_now()), "T-1")
    await routed.use_cases.dispatcher.drain(ticket_ids={"T-1"}, sweep=False)

    [_, again] = routed.published("assigned")
    assert again["agent_id"] == "ann" and again["reason"].startswith("reopened: back to the previous agent ann")
    assert routed.agents["ann"].load == 1


async def test_events_about_tickets_routing_never_saw_are_rejected_with_the_reason():
    routed = Routed()
    with pytest.raises(RejectedEvent, match="unknown ticket T-ghost"):
        await routed.consume(routed.use_cases.tickets.on_solved,
                             TicketSolved(ticket_id="T-ghost", solved_at=utc_now()), "T-ghost")
    with pytest.raises(RejectedEvent, match="unknown agent nobody"):
        await routed.consume(routed.use_cases.agents.on_agent_status_changed,
                             AgentStatusChanged(agent_id="nobody", status="away", changed_at=utc_now()), "nobody")
    assert routed.uow.published == []

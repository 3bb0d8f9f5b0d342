"""What-if: a discrete-event simulation of a roster serving a period's tickets through routing's own rules. Pure.

Every decision is routing's domain code, as the dispatcher calls it (`services.routing.dispatcher`):
tickets join the queue as `RoutedTicket.queue`, are served in `queue_key` order, need what
`RoutingConfig.requirements` says (escalation steps included, applied by `RoutedTicket.escalate` when
due), are offered to the agents `shortlist` admits and `place` chooses (`choose_agent`: capacity per
channel, skills, languages, tiers and teams, the score, affinity), are assigned by `RoutedTicket.assign`
and take capacity by `Agent.claimed`; an agent with room takes from the queue in order (`Room`), as the
dispatcher reads it for them. What the simulation replaces is only what is outside routing: time (a
heap of events), agents' presence (available during their shifts, offline outside, their held tickets
handed back when `UNASSIGN_ON_PRESENCE` names offline), and when tickets are solved (their handle time).

Simplifications, stated: escalation steps apply when due (the live sweep runs every few seconds);
an agent in offer mode accepts at once; nobody abandons; a ticket handed back is handled afresh.
"""

import bisect
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import count

from services.routing.domain import (
    CHANNELS,
    Agent,
    Presence,
    Requirements,
    Room,
    RoutedTicket,
    RoutedTicketState,
    RoutingConfig,
    WaitingTicket,
    affinity_agent,
    place,
    primary_language,
    queue_key,
    shortlist,
)
from services.routing.planning.history import BUCKET

CANDIDATE_LIMIT = 50
"""As the dispatcher's candidate read (`repository.CANDIDATE_LIMIT`)."""
AGENT_SCAN_LIMIT = 2000
"""As the dispatcher's scan of the queue for an agent with room (`dispatcher.AGENT_SCAN_LIMIT`)."""
PROGRESS_EVERY = 2000


class Cancelled(Exception):
    pass


@dataclass(frozen=True)
class Shift:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class RosterAgent:
    agent: Agent
    """The profile (skills, languages, tier, team, capacity, mode), offline until a shift starts."""
    shifts: tuple[Shift, ...]


@dataclass(frozen=True)
class Arrival:
    ticket: WaitingTicket
    handle_seconds: float


@dataclass(frozen=True)
class Scenario:
    roster: tuple[RosterAgent, ...]
    arrivals: tuple[Arrival, ...]
    """In order of arrival."""
    start: datetime
    end: datetime
    interval: timedelta = BUCKET
    target_seconds: float = 60
    sla_seconds: dict[str, float] = field(default_factory=dict)
    """Priority -> the wait past which a ticket breaches; a priority not named uses `target_seconds`."""
    config: RoutingConfig = RoutingConfig()
    latency: "Latency" = field(default_factory=lambda: Latency())


@dataclass(frozen=True)
class Latency:
    """How long the live platform takes to act on a fact, in seconds: a ticket reaches the dispatcher
    `arrival` after it was created (the hop from intake through the broker), and a freed slot is
    given out `release` after the ticket was solved. Zero models an instant router; a replay may use
    what the recorded period shows (`recorded_latency`)."""

    arrival: float = 0.0
    release: float = 0.0


def recorded_latency(tickets: list[dict]) -> Latency:
    """The medians the recorded tickets (`created_ms`, `assigned_ms`, `finished_ms`, `assignee_id`) show:

    - a ticket whose agent freed no slot while it waited waited only for routing to see it: `arrival`;
    - a ticket whose agent freed a slot while it waited was given out that long after the slot freed: `release`.
    """
    finishes: dict[str, list[int]] = {}
    for ticket in tickets:
        if ticket.get("assignee_id") and ticket.get("finished_ms"):
            finishes.setdefault(ticket["assignee_id"], []).append(ticket["finished_ms"])
    arrivals, releases = [], []
    for ticket in tickets:
        created, assigned = ticket["created_ms"], ticket.get("assigned_ms")
        if not assigned or not ticket.get("assignee_id"):
            continue
        freed = [f for f in finishes.get(ticket["assignee_id"], []) if created < f <= assigned]
        if freed:
            releases.append((assigned - max(freed)) / 1000)
        else:
            arrivals.append(max(assigned - created, 0) / 1000)
    return Latency(quantile(arrivals, 0.5) or 0.0, quantile(releases, 0.5) or 0.0)


@dataclass
class TicketOutcome:
    ticket_id: str
    priority: str
    created_at: datetime
    assigned_at: datetime | None = None
    agent_id: str | None = None

    def wait(self, end: datetime) -> float:
        return ((self.assigned_at or end) - self.created_at).total_seconds()


@dataclass
class Outcome:
    tickets: list[TicketOutcome]
    busy_seconds: dict[str, list[float]]
    """Agent -> ticket-seconds held, per interval."""
    on_shift_seconds: dict[str, list[float]]
    queue_seconds: list[float]
    """Ticket-seconds spent waiting, per interval (the time-average queue length times the interval)."""
    queue_max: list[int]
    decisions: int
    decision_seconds: float


# --- events ---------------------------------------------------------------------------------

ARRIVE, FINISH, SHIFT_START, SHIFT_END, ESCALATE, RELEASED = range(6)


class Simulation:
    def __init__(self, scenario: Scenario, *, clock: Callable[[], float] | None = None) -> None:
        self.scenario = scenario
        self.config = scenario.config
        self._clock = clock
        self._events: list = []
        self._order = count()
        self.agents: dict[str, Agent] = {}
        self._by_skill: dict[str, set[str]] = {}
        self._available: set[str] = set()
        self._free: set[str] = set()
        """Available agents with room: what the candidate read's index holds (presence and free capacity)."""
        self.queue: list[tuple] = []  # (queue_key, ticket_id, channel, language), sorted
        self.tickets: dict[str, RoutedTicket] = {}
        self._handle: dict[str, float] = {}
        self._holding: dict[str, int] = {}  # ticket -> serial of its current assignment
        self._held: dict[str, set[str]] = {}  # agent -> the tickets assigned to them
        self._affinity: dict[str, tuple[str, datetime]] = {}
        self._arriving: dict[str, WaitingTicket] = {}
        self._accrued_to: dict[str, datetime] = {}
        self._known_requirements: dict[str, tuple[tuple, Requirements]] = {}
        self.outcomes: dict[str, TicketOutcome] = {}
        intervals = max(1, math.ceil((scenario.end - scenario.start) / scenario.interval))
        self._intervals = intervals
        self._busy = {a.agent.id: [0.0] * intervals for a in scenario.roster}
        self._on_shift = {a.agent.id: [0.0] * intervals for a in scenario.roster}
        self._queue_seconds = [0.0] * intervals
        self._queue_max = [0] * intervals
        self._now = scenario.start
        self.decisions = 0
        self.decision_seconds = 0.0

    # --- the clock ---------------------------------------------------------------------------

    def _at(self, when: datetime, kind: int, subject: str, serial: int = 0) -> None:
        heapq.heappush(self._events, (when, kind, next(self._order), subject, serial))

    def run(self, *, progress: Callable[[float], None] = lambda share: None,
            cancelled: Callable[[], bool] = lambda: False) -> Outcome:
        scenario = self.scenario
        for member in scenario.roster:
            self.agents[member.agent.id] = member.agent.model_copy(update={"status": Presence.OFFLINE})
            for skill in member.agent.skills:
                self._by_skill.setdefault(skill, set()).add(member.agent.id)
            for shift in member.shifts:
                self._at(shift.start, SHIFT_START, member.agent.id)
                self._at(shift.end, SHIFT_END, member.agent.id)
        for arrival in scenario.arrivals:
            self._handle[arrival.ticket.ticket_id] = arrival.handle_seconds
            self._arriving[arrival.ticket.ticket_id] = arrival.ticket
            self._at(arrival.ticket.created_at + timedelta(seconds=scenario.latency.arrival), ARRIVE,
                     arrival.ticket.ticket_id)
        total = len(self._events) or 1
        handled = 0
        while self._events and self._events[0][0] < scenario.end:
            now = self._events[0][0]
            self._advance(now)
            dirty_tickets: set[str] = set()
            dirty_agents: set[str] = set()
            while self._events and self._events[0][0] == now:
                _, kind, _, subject, serial = heapq.heappop(self._events)
                self._apply(kind, subject, serial, now, dirty_tickets, dirty_agents)
                handled += 1
                if handled % PROGRESS_EVERY == 0:
                    if cancelled():
                        raise Cancelled()
                    progress(min(handled / total, 0.99))
            self._drain(now, dirty_tickets, dirty_agents)
        self._advance(scenario.end)
        for agent_id in self.agents:
            self._accrue(agent_id, scenario.end)
        return Outcome(
            tickets=list(self.outcomes.values()), busy_seconds=self._busy, on_shift_seconds=self._on_shift,
            queue_seconds=self._queue_seconds, queue_max=self._queue_max, decisions=self.decisions,
            decision_seconds=self.decision_seconds,
        )

    def _advance(self, until: datetime) -> None:
        """Accrue the queue's length between the last event and `until`."""
        since = self._now
        if until <= since:
            return
        waiting = len(self.queue)
        for index, seconds in self._split(since, until):
            self._queue_seconds[index] += waiting * seconds
            self._queue_max[index] = max(self._queue_max[index], waiting)
        self._now = until

    def _accrue(self, agent_id: str, until: datetime) -> None:
        """Accrue an agent's time on shift and ticket-seconds held since their last change; called before each."""
        since = self._accrued_to.get(agent_id, self.scenario.start)
        agent = self.agents[agent_id]
        if until > since and (agent.load or agent_id in self._available):
            for index, seconds in self._split(since, until):
                if agent_id in self._available:
                    self._on_shift[agent_id][index] += seconds
                self._busy[agent_id][index] += agent.load * seconds
        self._accrued_to[agent_id] = max(until, since)

    def _set_agent(self, agent: Agent, now: datetime) -> None:
        self._accrue(agent.id, now)
        self.agents[agent.id] = agent
        if agent.status is Presence.AVAILABLE and agent.free > 0:
            self._free.add(agent.id)
        else:
            self._free.discard(agent.id)

    def _split(self, since: datetime, until: datetime):
        start, size = self.scenario.start, self.scenario.interval
        index = int((since - start) / size)
        while since < until and index < self._intervals:
            edge = min(until, start + size * (index + 1))
            yield index, (edge - since).total_seconds()
            since, index = edge, index + 1

    # --- what happens --------------------------------------------------------------------------

    def _apply(self, kind: int, subject: str, serial: int, now: datetime, dirty_tickets: set, dirty_agents: set) -> None:
        config = self.config
        if kind == ARRIVE:
            needs = self._arriving.pop(subject)
            ticket = RoutedTicket.queue(needs, config.policy, correlation_id=None, causation_id=None)
            self.tickets[subject] = ticket
            self.outcomes[subject] = TicketOutcome(subject, ticket.priority.value, ticket.created_at)
            self._enqueue(ticket)
            self._schedule_escalation(ticket)
            dirty_tickets.add(subject)
        elif kind == FINISH:
            if self._holding.get(subject) != serial:
                return  # handed back meanwhile: that handling never finished
            ticket = self.tickets.pop(subject)  # solved: it leaves routing's hands (`RoutedTicket.finish`)
            self._known_requirements.pop(subject, None)
            del self._holding[subject]
            self._held[ticket.assignee_id].discard(subject)
            agent = self.agents[ticket.assignee_id]
            self._set_agent(agent.released(ticket.channel.value), now)
            if self.scenario.latency.release:
                self._at(now + timedelta(seconds=self.scenario.latency.release), RELEASED, agent.id)
            else:
                dirty_agents.add(agent.id)
        elif kind == RELEASED:
            dirty_agents.add(subject)
        elif kind == SHIFT_START:
            self._set_agent(self.agents[subject].model_copy(update={"status": Presence.AVAILABLE}), now)
            self._available.add(subject)
            dirty_agents.add(subject)
        elif kind == SHIFT_END:
            self._set_agent(self.agents[subject].model_copy(update={"status": Presence.OFFLINE}), now)
            self._available.discard(subject)
            if Presence.OFFLINE in config.unassign_on:
                self._hand_back(subject, now, dirty_tickets)
        elif kind == ESCALATE:
            ticket = self.tickets.get(subject)
            if ticket is None or ticket.state is not RoutedTicketState.WAITING or ticket.queued_at.timestamp() != serial:
                return
            escalated = ticket.escalate(now, config.policy).after
            self._replace_waiting(ticket, escalated)
            self._schedule_escalation(escalated)
            dirty_tickets.add(subject)

    def _hand_back(self, agent_id: str, now: datetime, dirty_tickets: set) -> None:
        for ticket_id in sorted(self._held.pop(agent_id, ())):
            ticket = self.tickets[ticket_id]
            unassigned = ticket.unassign(Presence.OFFLINE, now, self.config.policy)
            if unassigned is None:
                continue
            self.tickets[ticket.ticket_id] = unassigned.after
            self._holding.pop(ticket.ticket_id, None)
            self._set_agent(self.agents[agent_id].released(ticket.channel.value), now)
            self._enqueue(unassigned.after)
            self._schedule_escalation(unassigned.after)
            dirty_tickets.add(ticket.ticket_id)

    def _schedule_escalation(self, ticket: RoutedTicket) -> None:
        if ticket.next_escalation_at is not None:
            self._at(ticket.next_escalation_at, ESCALATE, ticket.ticket_id, ticket.queued_at.timestamp())

    @staticmethod
    def _entry(ticket: RoutedTicket) -> tuple:
        return (queue_key(ticket), ticket.ticket_id, ticket.channel.value, ticket.language)

    def _enqueue(self, ticket: RoutedTicket) -> None:
        bisect.insort(self.queue, self._entry(ticket))

    def _dequeue(self, ticket: RoutedTicket) -> None:
        entry = self._entry(ticket)
        index = bisect.bisect_left(self.queue, entry)
        if index < len(self.queue) and self.queue[index] == entry:
            del self.queue[index]

    def _replace_waiting(self, before: RoutedTicket, after: RoutedTicket) -> None:
        self._dequeue(before)
        self.tickets[after.ticket_id] = after
        self._enqueue(after)

    # --- the dispatcher's pass, as `Dispatcher._drain_once` makes it ----------------------------

    def _requirements(self, ticket: RoutedTicket, now: datetime) -> Requirements:
        """`RoutingConfig.requirements`, kept per ticket until its escalation step changes: nobody declines in a
        simulation, so nothing else it depends on changes while the ticket waits."""
        key = (ticket.ticket_id, ticket.escalation_step, ticket.queued_at)
        if (known := self._known_requirements.get(ticket.ticket_id)) is not None and known[0] == key:
            return known[1]
        requirements = self.config.requirements(ticket, now)
        self._known_requirements[ticket.ticket_id] = (key, requirements)
        return requirements

    def _drain(self, now: datetime, ticket_ids: set[str], agent_ids: set[str]) -> None:
        if not self._free:
            return
        started = self._clock() if self._clock else 0.0
        found: dict[str, RoutedTicket] = {}
        for ticket_id in ticket_ids:
            ticket = self.tickets[ticket_id]
            if ticket.state is RoutedTicketState.WAITING:
                found[ticket_id] = ticket
        for agent_id in agent_ids:
            agent = self.agents[agent_id]
            if agent.status is not Presence.AVAILABLE or agent.free <= 0:
                continue
            room = Room(agent, lambda t: self._requirements(t, now))
            for ticket in self._waiting_for(agent):
                room.offer(ticket)
                if room.full:
                    break
            found.update((ticket.ticket_id, ticket) for ticket in room.taken)
        queue = sorted(found.values(), key=queue_key)
        hopeless: set[Requirements] = set()
        for ticket in queue:
            requirements = self._requirements(ticket, now)
            if requirements in hopeless:
                continue
            candidates = shortlist(self._pool(requirements), requirements, CANDIDATE_LIMIT)
            if not candidates:
                hopeless.add(requirements)
                continue
            preferred = self._affinity_agent(ticket, now)
            if preferred and preferred in self.agents and all(agent.id != preferred for agent in candidates):
                candidates.append(self.agents[preferred])
            placement = place(ticket, requirements, candidates, now, affinity_agent_id=preferred,
                              default_mode=self.config.mode)
            self.decisions += 1
            if placement is not None:
                self._assign(ticket, placement.match, now)
        if self._clock:
            self.decision_seconds += self._clock() - started

    def _waiting_for(self, agent: Agent):
        """The queue in order, as the dispatcher's read for an agent with room filters it: the channels they have
        room on, their languages (or none), at most `AGENT_SCAN_LIMIT` tickets."""
        channels = {channel for channel in CHANNELS if agent.free_on(channel) > 0}
        languages = {primary_language(language) for language in agent.languages} | {None} if agent.languages else None
        read = 0
        for _, ticket_id, channel, language in self.queue:
            if channel in channels and (languages is None or language in languages):
                yield self.tickets[ticket_id]
                read += 1
                if read >= AGENT_SCAN_LIMIT:
                    return

    def _pool(self, requirements: Requirements):
        """Agents available with room who have every required skill (what the candidate read's index finds)."""
        pool = self._free
        for skill, _ in requirements.skills:
            pool = pool & self._by_skill.get(skill, set())
        return (self.agents[agent_id] for agent_id in sorted(pool))

    def _affinity_agent(self, ticket: RoutedTicket, now: datetime) -> str | None:
        remembered = self._affinity.get(ticket.customer_id) if ticket.customer_id else None
        return affinity_agent(ticket.previous_agent_id, remembered, now, self.config.affinity_window)

    def _assign(self, ticket: RoutedTicket, match, now: datetime) -> None:
        agent = match.agent
        self._set_agent(agent.claimed(ticket.channel.value, now), now)
        assigned = ticket.assign(agent.id, match.reason, now).after
        self._dequeue(ticket)
        self.tickets[ticket.ticket_id] = assigned
        serial = next(self._order)
        self._holding[ticket.ticket_id] = serial
        self._held.setdefault(agent.id, set()).add(ticket.ticket_id)
        if ticket.customer_id:
            self._affinity[ticket.customer_id] = (agent.id, now)
        outcome = self.outcomes[ticket.ticket_id]
        if outcome.assigned_at is None:
            outcome.assigned_at, outcome.agent_id = now, agent.id
        self._at(now + timedelta(seconds=self._handle[ticket.ticket_id]), FINISH, ticket.ticket_id, serial)


def simulate(scenario: Scenario, **kwargs) -> Outcome:
    return Simulation(scenario).run(**kwargs)


# --- arrivals and handle times ------------------------------------------------------------


def poisson_arrivals(
    rng: random.Random, start: datetime, interval: timedelta, rates: list[float], make: Callable[[str, datetime], WaitingTicket],
    handle: Callable[[], float], prefix: str = "sim",
) -> list[Arrival]:
    """Poisson arrivals at `rates[i]` tickets in interval i (exponential gaps, rate changing by interval)."""
    arrivals: list[Arrival] = []
    size = interval.total_seconds()
    for index, rate in enumerate(rates):
        if rate <= 0:
            continue
        at = 0.0
        while True:
            at += rng.expovariate(rate / size)
            if at >= size:
                break
            created = start + interval * index + timedelta(seconds=at)
            arrivals.append(Arrival(make(f"{prefix}-{index}-{len(arrivals)}", created), handle()))
    arrivals.sort(key=lambda arrival: arrival.ticket.created_at)
    return arrivals


def handle_sampler(rng: random.Random, distribution: str, mean_seconds: float, sigma: float = 1.0) -> Callable[[], float]:
    """`exponential`, `lognormal` (with `sigma` of the log; the mean is kept), or `fixed`."""
    if distribution == "exponential":
        return lambda: rng.expovariate(1 / mean_seconds)
    if distribution == "lognormal":
        mu = math.log(mean_seconds) - sigma**2 / 2
        return lambda: rng.lognormvariate(mu, sigma)
    return lambda: mean_seconds


# --- the answer ------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def report(scenario: Scenario, outcome: Outcome, *, breach_list_limit: int = 50) -> dict:
    """Per interval: waits p50 and p90, the share assigned within target, queue length, occupancy per agent,
    and the tickets that breach; and the same over the whole period."""
    size = scenario.interval
    intervals = len(outcome.queue_seconds)
    by_interval: list[list[TicketOutcome]] = [[] for _ in range(intervals)]
    for ticket in outcome.tickets:
        index = int((ticket.created_at - scenario.start) / size)
        if 0 <= index < intervals:
            by_interval[index].append(ticket)
    rows = []
    all_waits: list[float] = []
    all_breaches: list[str] = []
    for index, tickets in enumerate(by_interval):
        waits = [t.wait(scenario.end) for t in tickets]
        all_waits += waits
        breaches = [t.ticket_id for t in tickets
                    if t.wait(scenario.end) > scenario.sla_seconds.get(t.priority, scenario.target_seconds)]
        all_breaches += breaches
        seconds = min(size, scenario.end - (scenario.start + size * index)).total_seconds()
        occupancy = {
            agent_id: round(outcome.busy_seconds[agent_id][index] / on, 3)
            for agent_id, shifts in outcome.on_shift_seconds.items() if (on := shifts[index]) > 0
        }
        rows.append({
            "start": (scenario.start + size * index).isoformat(),
            "arrivals": len(tickets),
            "assigned": sum(1 for t in tickets if t.assigned_at),
            "wait_p50_seconds": _round(quantile(waits, 0.5)),
            "wait_p90_seconds": _round(quantile(waits, 0.9)),
            "within_target": _share(waits, scenario.target_seconds),
            "queue_length_mean": round(outcome.queue_seconds[index] / seconds, 2) if seconds > 0 else 0.0,
            "queue_length_max": outcome.queue_max[index],
            "agents_on_shift": round(sum(s[index] for s in outcome.on_shift_seconds.values()) / seconds, 2)
            if seconds > 0 else 0.0,
            "occupancy_by_agent": occupancy,
            "breaches": len(breaches),
            "breached_ticket_ids": breaches[:breach_list_limit],
        })
    return {
        "summary": {
            "tickets": len(outcome.tickets),
            "assigned": sum(1 for t in outcome.tickets if t.assigned_at),
            "wait_mean_seconds": _round(sum(all_waits) / len(all_waits)) if all_waits else None,
            "wait_p50_seconds": _round(quantile(all_waits, 0.5)),
            "wait_p90_seconds": _round(quantile(all_waits, 0.9)),
            "within_target": _share(all_waits, scenario.target_seconds),
            "waited": _share_over(all_waits, 0.0),
            "breaches": len(all_breaches),
            "decisions": outcome.decisions,
        },
        "intervals": rows,
    }


def _share(waits: list[float], target: float) -> float | None:
    return round(sum(1 for w in waits if w <= target) / len(waits), 4) if waits else None


def _share_over(waits: list[float], threshold: float) -> float | None:
    return round(sum(1 for w in waits if w > threshold) / len(waits), 4) if waits else None


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None

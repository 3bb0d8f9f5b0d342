"""Who should take a ticket, and in which order. Pure: no I/O, so the rules are tested on their own.

- Hard constraints (`Requirements.admits`): available, every required skill at or above its
  level, speaks the ticket's language, free capacity on the ticket's channel, in a targeted
  tier and team, not an agent who declined the ticket or let its offer lapse within the cooldown.
- Score (`score`): skill fit, utilisation on the channel, idle time and affinity to the
  customer's previous agent; the reason of each decision says which parts decided it.
- Queue order (`queue_key`): urgency (priority, one step up after an SLA warning), then age.
- Escalation (`EscalationPolicy`): configured steps that relax the requirements as a ticket waits.
- Presence (`supersedes`): a status change applies only if newer than the presence in force.
- The routed ticket (`RoutedTicket`): the aggregate whose transitions (queue, offer, accept, reject or
  expire, assign, unassign, finish, reopen, escalate, reprioritise) are the only way its state
  changes; each returns a `Transition` carrying the facts it causes, for the use case to store and publish.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from shared.events import (
    SKILL_PATTERN,
    Channel,
    OfferOutcome,
    Payload,
    Priority,
    TicketAssigned,
    TicketEscalated,
    TicketOfferAnswered,
    TicketOffered,
    TicketUnassigned,
)

SkillName = Annotated[str, Field(pattern=SKILL_PATTERN)]
SkillLevel = Annotated[int, Field(ge=1, le=5, strict=True)]  # strict: `true` or "3" is no level
Slots = Annotated[int, Field(ge=0, le=1000, strict=True)]
LanguageTag = Annotated[str, Field(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")]
TeamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")]

CHANNELS: tuple[str, ...] = tuple(channel.value for channel in Channel)
MAX_LEVEL = 5
DECLINE_COOLDOWN = timedelta(seconds=300)



class RoutedTicketState(StrEnum):
    """Where a ticket stands in routing. It waits in the queue, is offered to an agent (in offer mode,
    until they accept or decline or the offer expires) or assigned at once, and is done when solved,
    closed or gone; a returned offer, a reassignment or an agent going away puts it back to waiting."""

    WAITING = "waiting"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    DONE = "done"


class Presence(StrEnum):
    AVAILABLE = "available"
    AWAY = "away"
    OFFLINE = "offline"


class Tier(StrEnum):
    L1 = "l1"
    L2 = "l2"
    SUPERVISOR = "supervisor"


class Mode(StrEnum):
    AUTO = "auto"
    OFFER = "offer"


def primary_language(tag: str | None) -> str | None:
    """`pt-BR` -> `pt`: agents are matched on the primary language subtag."""
    return tag.split("-")[0].lower() if tag else None


class AgentProfile(BaseModel):
    """What a workforce system or an admin says about an agent (`PUT /v1/agents/{id}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    skills: dict[SkillName, SkillLevel] = Field(
        default_factory=dict, max_length=100, json_schema_extra={"additionalProperties": False}  # names match the pattern
    )
    languages: list[LanguageTag] = Field(
        default_factory=list, max_length=20, description="Languages spoken; empty means not restricted."
    )
    team: TeamName | None = None
    tier: Tier = Tier.L1
    capacity: Slots | dict[Channel, Slots] = Field(
        description="Tickets held at once: a number (a pool every channel draws on) or per channel, "
        'e.g. {"chat": 3, "email": 10, "phone": 1}; channels not named get none.'
    )
    status: Presence = Presence.OFFLINE
    mode: Mode | None = Field(default=None, description="`auto` or `offer`; unset follows ROUTING_MODE.")


class PresenceChange(BaseModel):
    """`PATCH /v1/agents/{id}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Presence


def channel_capacity(capacity: int | dict) -> tuple[dict[str, int], int]:
    """Per-channel limits and the overall limit.

    A plain number N is a pool: each channel may use up to N and all together at most N (the
    skeleton's meaning). Per-channel limits are independent: the overall limit is their sum.
    """
    if isinstance(capacity, int):
        return {channel: capacity for channel in CHANNELS}, capacity
    limits = {channel: int(capacity.get(channel, capacity.get(Channel(channel), 0))) for channel in CHANNELS}
    return limits, sum(limits.values())


class Agent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    skills: dict[str, int]
    languages: list[str] = Field(default_factory=list)
    team: str | None = None
    tier: Tier = Tier.L1
    capacity: int | dict[str, int]
    status: Presence
    mode: Mode | None = None
    load: int = Field(default=0, description="Tickets held (assigned or offered) on every channel together.")
    load_by_channel: dict[str, int] = Field(default_factory=dict)
    last_assigned_at: datetime | None = None
    presence_changed_at: datetime | None = Field(
        default=None, description="When the presence in force began; unset for agents stored before routing kept it."
    )
    version: int = 1

    @cached_property
    def limits(self) -> tuple[dict[str, int], int]:
        """`channel_capacity` of the capacity, worked out once per agent (matching reads it for every candidate)."""
        return channel_capacity(self.capacity)

    @cached_property
    def primary_languages(self) -> frozenset[str]:
        """Worked out once per agent, like `limits`: matching asks every candidate whether they speak the language."""
        return frozenset(primary_language(language) for language in self.languages)

    def model_copy(self, *, update: dict | None = None, deep: bool = False) -> "Agent":
        copied = super().model_copy(update=update, deep=deep)
        for field_name, derived in (("capacity", "limits"), ("languages", "primary_languages")):
            if update and field_name in update:
                copied.__dict__.pop(derived, None)  # worked out again from the new value
        return copied

    @computed_field
    @property
    def free(self) -> int:
        return max(self.limits[1] - self.load, 0)

    @computed_field
    @property
    def free_by_channel(self) -> dict[str, int]:
        return {channel: self.free_on(channel) for channel in CHANNELS}

    def free_on(self, channel: str) -> int:
        limits, total = self.limits
        return max(min(limits[channel] - self.load_by_channel.get(channel, 0), total - self.load), 0)

    def utilisation(self, channel: str) -> float:
        """Share of the channel's capacity not free: with a pool, tickets on other channels count too."""
        limit = self.limits[0][channel]
        return 1 - self.free_on(channel) / limit if limit else 1.0

    def speaks(self, language: str | None) -> bool:
        return language is None or not self.languages or language in self.primary_languages

    def with_profile(self, profile: AgentProfile, at: datetime) -> "Agent":
        """Profile changes keep the agent's current load: tickets already held stay held.

        The profile states the presence as of `at`, so status events older than it no longer apply.
        Validated, not copied: `model_copy` would keep plain strings where presence and tier are enums.
        """
        return Agent.model_validate(
            {**self.model_dump(), **profile.model_dump(), "presence_changed_at": at, "version": self.version + 1}
        )

    def claimed(self, channel: str, at: datetime) -> "Agent":
        """After taking one unit of capacity on `channel` at `at` (an offer or an assignment)."""
        load_by_channel = {**self.load_by_channel, channel: self.load_by_channel.get(channel, 0) + 1}
        return self.model_copy(
            update={"load": self.load + 1, "load_by_channel": load_by_channel, "last_assigned_at": at,
                    "version": self.version + 1}
        )

    def released(self, channel: str) -> "Agent":
        """After giving back one unit of capacity on `channel` (never below zero)."""
        if self.load_by_channel.get(channel, 0) <= 0:
            return self
        load_by_channel = {**self.load_by_channel, channel: self.load_by_channel[channel] - 1}
        return self.model_copy(update={"load": self.load - 1, "load_by_channel": load_by_channel,
                                       "version": self.version + 1})

    @classmethod
    def new(cls, agent_id: str, profile: AgentProfile, at: datetime) -> "Agent":
        return cls.model_validate({"id": agent_id, **profile.model_dump(), "presence_changed_at": at})


def presence_instant(changed_at: datetime, received_at: datetime) -> datetime:
    """When a status event's change counts as made: its `changed_at`, but never after routing received it.

    A workforce system whose clock runs ahead would otherwise make every later change, from an
    admin or from a system with a good clock, look older than its own and be ignored.
    """
    return min(changed_at, received_at)


def supersedes(changed_at: datetime, in_force_since: datetime | None) -> bool:
    """A status change applies only if newer than the presence in force: a delayed or replayed event
    must not undo a later one. An agent stored before routing kept the instant has none: any change is newer."""
    return in_force_since is None or changed_at > in_force_since


class WaitingTicket(BaseModel):
    """Routing's view of a ticket: what it needs and how long it has waited."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    priority: Priority
    required_skills: list[str]
    skill_levels: dict[str, int] = Field(default_factory=dict)
    channel: Channel = Channel.WEB
    language: str | None = None
    category: str | None = None
    customer_id: str | None = None
    previous_agent_id: str | None = None
    created_at: datetime
    queued_at: datetime | None = Field(default=None, description="When it (re)entered the queue; escalation counts from here.")
    sla_warned: bool = False
    escalation_step: int = 0
    declines: dict[str, datetime] = Field(
        default_factory=dict, description="Agent id -> when they last rejected the ticket's offer or let it lapse."
    )
    version: int = 1

    @property
    def urgency(self) -> int:
        return urgency(self.priority, self.sla_warned)

    @property
    def required_levels(self) -> dict[str, int]:
        return {skill: max(1, min(MAX_LEVEL, self.skill_levels.get(skill, 1))) for skill in self.required_skills}

    def declined(self, agent_id: str, at: datetime) -> "WaitingTicket":
        """After `agent_id` rejected the offer or let it lapse at `at`: their latest decline counts."""
        return self.model_copy(update={"declines": {**self.declines, agent_id: at}})

    def cooling_down(self, now: datetime, cooldown: timedelta) -> frozenset[str]:
        """Agents who declined within the cooldown: they are not offered this ticket again yet."""
        return frozenset(agent for agent, at in self.declines.items() if now - at < cooldown)

    def declines_lapse_at(self, now: datetime, cooldown: timedelta) -> datetime | None:
        """When the next running cooldown ends (the ticket is looked at again then), or None."""
        ends = [at + cooldown for at in self.declines.values() if at + cooldown > now]
        return min(ends, default=None)


def urgency(priority: Priority, sla_warned: bool) -> int:
    """Priority rank (0 low .. 3 urgent), one step up once the SLA warned that it is close to breaching."""
    return priority.rank + (1 if sla_warned else 0)


def queue_key(ticket: WaitingTicket) -> tuple[int, datetime, str]:
    """Most urgent first, then oldest first (original age, kept when a ticket comes back)."""
    return (-ticket.urgency, ticket.created_at, ticket.ticket_id)


queue_order = queue_key  # the skeleton's name


# --- requirements and escalation ----------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """The hard constraints a ticket puts on an agent, after the escalation steps it went through."""

    skills: tuple[tuple[str, int], ...]
    channel: str
    language: str | None = None
    tiers: frozenset[Tier] = frozenset({Tier.L1, Tier.L2})
    teams: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    last_resort: frozenset[str] = frozenset()
    """Agents whose decline cooled down: admitted, but chosen only when nobody else is eligible."""

    @cached_property
    def skill_levels(self) -> dict[str, int]:
        """Once per requirements: scoring reads it for every candidate."""
        return dict(self.skills)

    def admits(self, agent: Agent) -> bool:
        return (
            agent.status is Presence.AVAILABLE
            and agent.id not in self.exclude
            and agent.tier in self.tiers
            and (self.teams is None or agent.team in self.teams)
            and all(agent.skills.get(skill, 0) >= level for skill, level in self.skills)
            and agent.speaks(self.language)
            and agent.free_on(self.channel) > 0
        )

    def describe(self) -> str:
        skills = ", ".join(f"{skill}>={level}" for skill, level in self.skills) or "no skills"
        parts = [skills, f"channel {self.channel}", f"tiers {'/'.join(sorted(self.tiers))}"]
        if self.language:
            parts.append(f"language {self.language}")
        if self.teams is not None:
            parts.append(f"teams {'/'.join(sorted(self.teams))}")
        return "; ".join(parts)


class EscalationAction(StrEnum):
    RELAX_SKILL_LEVEL = "relax_skill_level"
    WIDEN_TO_TEAM = "widen_to_team"
    WIDEN_TO_L2 = "widen_to_l2"
    SUPERVISOR_QUEUE = "supervisor_queue"


class EscalationStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after_seconds: float = Field(gt=0, description="Waiting time (since the ticket entered the queue) before this step.")
    action: EscalationAction
    levels: int = Field(default=1, ge=1, le=4, description="relax_skill_level: levels taken off each requirement.")
    teams: list[TeamName] = Field(
        default_factory=list, description="widen_to_team: teams added; empty lifts the team restriction."
    )

    def describe(self) -> str:
        if self.action is EscalationAction.RELAX_SKILL_LEVEL:
            return f"required skill levels lowered by {self.levels} after {self.after_seconds:g}s waiting"
        if self.action is EscalationAction.WIDEN_TO_TEAM:
            teams = ", ".join(self.teams) if self.teams else "every team"
            return f"widened to {teams} after {self.after_seconds:g}s waiting"
        if self.action is EscalationAction.WIDEN_TO_L2:
            return f"widened to l2 agents after {self.after_seconds:g}s waiting"
        return f"moved to the supervisor queue after {self.after_seconds:g}s waiting"


class EscalationPolicy(BaseModel):
    """The escalation workflow (ESCALATION_FILE / ESCALATION_JSON).

    Tickets target l1 agents until a `widen_to_l2` step runs when the workflow has one, else
    l1 and l2 from the start; `team_by_category` restricts a ticket to teams by its category
    until a `widen_to_team` step; `supervisor_queue` hands it to supervisors, skills aside.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[EscalationStep] = Field(default_factory=list, max_length=20)
    team_by_category: dict[str, list[TeamName]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> "EscalationPolicy":
        waits = [step.after_seconds for step in self.steps]
        if waits != sorted(waits):
            raise ValueError("steps must be in order of after_seconds")
        actions = [step.action for step in self.steps]
        if EscalationAction.SUPERVISOR_QUEUE in actions[:-1]:
            raise ValueError("supervisor_queue can only be the last step")
        return self

    @property
    def initial_tiers(self) -> frozenset[Tier]:
        if any(step.action is EscalationAction.WIDEN_TO_L2 for step in self.steps):
            return frozenset({Tier.L1})
        return frozenset({Tier.L1, Tier.L2})

    def requirements(
        self, ticket: WaitingTicket, now: datetime, decline_cooldown: timedelta = DECLINE_COOLDOWN
    ) -> Requirements:
        """What `ticket` needs at `now`: the steps it went through, and who declined it within the cooldown."""
        levels = ticket.required_levels
        tiers = self.initial_tiers
        teams_listed = self.team_by_category.get(ticket.category or "")
        teams = frozenset(teams_listed) if teams_listed else None
        for step in self.steps[: ticket.escalation_step]:
            if step.action is EscalationAction.RELAX_SKILL_LEVEL:
                levels = {skill: max(1, level - step.levels) for skill, level in levels.items()}
            elif step.action is EscalationAction.WIDEN_TO_L2:
                tiers = tiers | {Tier.L2}
            elif step.action is EscalationAction.WIDEN_TO_TEAM:
                teams = None if not step.teams or teams is None else teams | set(step.teams)
            else:
                tiers, teams, levels = frozenset({Tier.SUPERVISOR}), None, {}
        cooling = ticket.cooling_down(now, decline_cooldown)
        return Requirements(
            skills=tuple(sorted(levels.items())),
            channel=ticket.channel.value,
            language=primary_language(ticket.language),
            tiers=tiers,
            teams=teams,
            exclude=cooling,
            last_resort=frozenset(ticket.declines) - cooling,
        )

    def due_steps(self, done: int, waited_seconds: float) -> list[tuple[int, EscalationStep]]:
        """The steps (numbered from 1) that are due now, after the first `done` ran."""
        return [
            (number, step)
            for number, step in enumerate(self.steps, start=1)
            if number > done and waited_seconds >= step.after_seconds
        ]

    def next_due_seconds(self, done: int) -> float | None:
        """Waiting time at which the next step is due, or None when every step ran."""
        return self.steps[done].after_seconds if done < len(self.steps) else None

    def next_due_at(self, queued_at: datetime, done: int) -> datetime | None:
        """When the next step is due for a ticket that entered the queue at `queued_at`, or None."""
        wait = self.next_due_seconds(done)
        return None if wait is None else queued_at + timedelta(seconds=wait)


# --- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    skill_fit: float = 1.0
    utilisation: float = 3.0
    idle: float = 0.5
    affinity: float = 3.0
    idle_horizon: timedelta = timedelta(hours=1)


DEFAULT_WEIGHTS = Weights()


class Score(NamedTuple):
    """A tuple: made for every candidate of every ticket, at a fraction of a frozen dataclass's cost."""

    total: float
    skill_fit: float
    utilisation: float
    idle_seconds: float
    affinity: bool


def score(
    agent: Agent, requirements: Requirements, now: datetime, *, affinity_agent_id: str | None, weights: Weights = DEFAULT_WEIGHTS
) -> Score:
    """Higher is better. Each part is in [0, 1] before weighting.

    - skill fit: how far above the required levels the agent is, on average (1 with no skills required);
    - utilisation: share of the channel's capacity already in use (counts against);
    - idle: time since the last assignment, up to `idle_horizon` (never assigned counts as fully idle);
    - affinity: the agent who helped this customer before, inside the affinity window.
    """
    levels = requirements.skill_levels
    if levels:
        fit = sum((agent.skills.get(s, 0) - lvl) / (MAX_LEVEL - lvl or 1) for s, lvl in levels.items()) / len(levels)
        fit = max(0.0, min(1.0, fit))
    else:
        fit = 1.0
    used = agent.utilisation(requirements.channel)
    horizon = weights.idle_horizon.total_seconds()
    idle = max(0.0, (now - agent.last_assigned_at).total_seconds()) if agent.last_assigned_at else horizon
    idle_part = min(idle / horizon, 1.0)
    affine = affinity_agent_id is not None and agent.id == affinity_agent_id
    total = (
        weights.skill_fit * fit
        + weights.utilisation * (1 - used)
        + weights.idle * idle_part
        + (weights.affinity if affine else 0.0)
    )
    return Score(total, fit, used, idle, affine)


@dataclass(frozen=True)
class Match:
    agent: Agent
    reason: str
    score: Score | None = None


def choose_agent(
    candidates: list[Agent],
    ticket: WaitingTicket,
    requirements: Requirements | None = None,
    now: datetime | None = None,
    *,
    affinity_agent_id: str | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Match | None:
    """The best-scoring agent the hard constraints admit; ties go to the longest idle, then to the smallest id.

    An agent who declined the ticket before comes back only when nobody else is eligible: a
    decline hands the ticket to someone else whenever someone else can take it.
    """
    now = now or ticket.created_at
    requirements = requirements or EscalationPolicy().requirements(ticket, now)
    eligible = [agent for agent in candidates if requirements.admits(agent)]
    if not eligible:
        return None
    ranked = []
    for agent in eligible:
        result = score(agent, requirements, now, affinity_agent_id=affinity_agent_id, weights=weights)
        rank = (agent.id not in requirements.last_resort, round(result.total, 9), result.idle_seconds)
        ranked.append((rank, result, agent))
    top = max(rank for rank, _, _ in ranked)
    best_score, best = min(((result, agent) for rank, result, agent in ranked if rank == top), key=lambda tied: tied[1].id)
    return Match(best, explain(best, best_score, requirements, len(eligible)), best_score)


def shortlist(agents: Iterable[Agent], requirements: Requirements, limit: int) -> list[Agent]:
    """The agents the hard constraints admit, most free first, at most `limit`: who `choose_agent` picks from.

    The live dispatcher reads them from the skill index, the planning simulator from memory; both end here.
    """
    admitted = [agent for agent in agents if requirements.admits(agent)]
    return sorted(admitted, key=lambda agent: -agent.free)[:limit]


@dataclass(frozen=True)
class Placement:
    """The dispatcher's decision for one waiting ticket: who takes it, why, and how (assigned or offered)."""

    match: Match
    mode: Mode


def place(
    ticket: WaitingTicket, requirements: Requirements, candidates: list[Agent], now: datetime, *,
    affinity_agent_id: str | None, default_mode: Mode,
) -> Placement | None:
    """The decision the dispatcher makes for a ticket at the head of what it serves, and the planning
    simulator too: the best candidate, placed in their own mode (else the configured one)."""
    match = choose_agent(candidates, ticket, requirements, now, affinity_agent_id=affinity_agent_id)
    return Placement(match, match.agent.mode or default_mode) if match is not None else None


class Room:
    """What an agent with room takes from the waiting tickets read in queue order: each ticket they can
    take, while they have room on its channel and overall. The dispatcher reads the queue through it when
    an agent may have room, and so does the planning simulator."""

    def __init__(self, agent: Agent, requirements_of: Callable[[WaitingTicket], Requirements]) -> None:
        self._agent = agent
        self._requirements_of = requirements_of
        self._room = {channel: agent.free_on(channel) for channel in CHANNELS}
        self.taken: list = []

    @property
    def full(self) -> bool:
        return len(self.taken) >= self._agent.free or not any(self._room.values())

    def offer(self, ticket: WaitingTicket) -> None:
        channel = ticket.channel.value
        if self._room[channel] > 0 and self._requirements_of(ticket).admits(self._agent):
            self.taken.append(ticket)
            self._room[channel] -= 1


def explain(agent: Agent, result: Score, requirements: Requirements, eligible: int) -> str:
    levels = requirements.skill_levels
    skills = ", ".join(f"{s} {agent.skills.get(s, 0)}>={lvl}" for s, lvl in levels.items()) or "none required"
    channel = requirements.channel
    limit = channel_capacity(agent.capacity)[0][channel]
    parts = [
        f"skills: {skills}",
        f"{channel} load {agent.load_by_channel.get(channel, 0)}/{limit} before",
        f"idle {int(result.idle_seconds)}s" if agent.last_assigned_at else "no assignment yet",
    ]
    if requirements.language:
        parts.append(f"speaks {requirements.language}")
    if result.affinity:
        parts.append("affinity: helped this customer before")
    if agent.id in requirements.last_resort:
        parts.append("declined it before; offered again as nobody else is eligible")
    parts.append(f"best of {eligible} eligible (score {result.total:.2f}, least utilised then longest idle)")
    return "; ".join(parts)


def can_take(agent: Agent, ticket: WaitingTicket) -> bool:
    """Eligibility under the default workflow (no escalation), when the ticket was created."""
    return EscalationPolicy().requirements(ticket, ticket.created_at).admits(agent)


def affinity_agent(
    hint: str | None, remembered: tuple[str, datetime] | None, now: datetime, window: timedelta
) -> str | None:
    """The agent a ticket has affinity to, inside the window.

    The producer's hint (`previous_agent_id`) names who, without saying when; routing remembers
    when it last gave this customer to an agent. So the hint wins, unless routing remembers that
    same agent outside the window; with no hint, routing's memory counts inside the window.
    """
    agent = hint or (remembered[0] if remembered else None)
    if remembered and remembered[0] == agent and now - remembered[1] > window:
        return None
    return agent


def can_return_to(agent: Agent | None, channel: str) -> bool:
    """A reopened ticket goes back to its previous agent when they are available with room on its channel."""
    return agent is not None and agent.status is Presence.AVAILABLE and agent.free_on(channel) > 0


@dataclass
class QueueSummary:
    """What `GET /v1/queues` answers, computed from waiting tickets."""

    depth: int = 0
    by_priority: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in Priority})
    by_skill: dict[str, int] = field(default_factory=dict)
    by_channel: dict[str, int] = field(default_factory=dict)
    oldest_ticket_id: str | None = None
    oldest_wait_seconds: float = 0.0


# --- the routed ticket ----------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingConfig:
    mode: Mode = Mode.AUTO
    offer_timeout: timedelta = timedelta(seconds=120)
    unassign_on: frozenset[Presence] = frozenset({Presence.OFFLINE})
    affinity_window: timedelta = timedelta(days=7)
    policy: EscalationPolicy = EscalationPolicy()
    decline_cooldown: timedelta = DECLINE_COOLDOWN

    def requirements(self, ticket: WaitingTicket, now: datetime) -> Requirements:
        return self.policy.requirements(ticket, now, self.decline_cooldown)


class UnknownAgent(LookupError):
    pass


class UnknownOffer(LookupError):
    pass


class OfferClosed(Exception):
    """The offer was answered, expired or withdrawn already."""


class InvalidTransition(Exception):
    """A use case asked a routed ticket for a change its state does not allow (a bug, not bad input)."""


class RoutedTicket(WaitingTicket):
    """The aggregate: a ticket in routing's hands, what matching reads of it (`WaitingTicket`) and where
    it stands (`state`, `RoutedTicketState`).

    It changes only through its transitions. Each returns a `Transition` (or None when there is nothing
    to do): the ticket after it, the fields whose stored values must still be those read for it to
    apply (so two replicas never both make it), and the events it causes. Instants are to the
    millisecond, as stored.
    """

    state: RoutedTicketState = RoutedTicketState.WAITING
    assignee_id: str | None = Field(default=None, description="The agent it is offered or assigned to.")
    previous_assignee_id: str | None = None
    return_to: str | None = Field(default=None, description="Reopened: its previous agent, who gets it if they have room.")
    offer_id: str | None = Field(default=None, description="The open offer.")
    offer_ids: list[str] = Field(default_factory=list, description="Every offer made, open or closed.")
    offer_expires_at: datetime | None = None
    assigned_at: datetime | None = None
    reason: str | None = Field(default=None, description="Why it was offered or assigned to its agent.")
    finished_at: datetime | None = None
    finished_as: str | None = None
    next_escalation_at: datetime | None = None
    decline_lapse_at: datetime | None = Field(default=None, description="When a decline's cooldown ends next.")
    correlation_id: str | None = Field(default=None, description="Of the event that created it; its facts keep it.")
    causation_id: str | None = None

    @classmethod
    def queue(
        cls, needs: WaitingTicket, policy: EscalationPolicy, *, correlation_id: str | None, causation_id: str | None
    ) -> "RoutedTicket":
        """A ticket routing learns about joins the queue, matched on its primary language."""
        queued_at = needs.queued_at or needs.created_at
        return cls(
            **{**needs.model_dump(), "language": primary_language(needs.language), "queued_at": queued_at},
            next_escalation_at=policy.next_due_at(queued_at, 0),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    @property
    def slot_holder(self) -> str | None:
        """The agent whose capacity it takes while offered or assigned to them."""
        return self.assignee_id if self.state in (RoutedTicketState.OFFERED, RoutedTicketState.ASSIGNED) else None

    def reprioritise(self, priority: Priority) -> "Transition":
        return self._becomes((), priority=priority)

    def warn_sla(self) -> "Transition | None":
        """Close to breaching: one step up the queue, once, while it waits or is offered."""
        if self.state not in (RoutedTicketState.WAITING, RoutedTicketState.OFFERED) or self.sla_warned:
            return None
        return self._becomes((), sla_warned=True)

    def offer(self, agent_id: str, reason: str, offer_id: str, now: datetime, timeout: timedelta) -> "Transition":
        """Reserved for `agent_id`, who may accept until the offer expires."""
        self._must_be(RoutedTicketState.WAITING)
        expires = now + timeout
        offered = TicketOffered(ticket_id=self.ticket_id, offer_id=offer_id, agent_id=agent_id, expires_at=expires)
        return self._becomes(
            ("state", "version"), [offered], state=RoutedTicketState.OFFERED, assignee_id=agent_id, offer_id=offer_id,
            return_to=None, offer_expires_at=expires, reason=reason, offer_ids=[*self.offer_ids, offer_id],
        )

    def assign(self, agent_id: str, reason: str, now: datetime, team: str | None = None) -> "Transition":
        self._must_be(RoutedTicketState.WAITING)
        assigned = TicketAssigned(ticket_id=self.ticket_id, agent_id=agent_id, reason=reason, assigned_at=now, team=team)
        return self._becomes(
            ("state", "version"), [assigned], state=RoutedTicketState.ASSIGNED, assignee_id=agent_id,
            assigned_at=now, reason=reason, return_to=None,
        )

    def forgo_return(self) -> "Transition":
        """Reopened, but its previous agent cannot take it: it is matched like any waiting ticket."""
        self._must_be(RoutedTicketState.WAITING)
        return self._becomes(("state", "version"), return_to=None)

    def accept(self, offer_id: str, now: datetime, team: str | None = None) -> "Transition":
        self._must_be_open(offer_id, now)
        answered = TicketOfferAnswered(ticket_id=self.ticket_id, offer_id=offer_id, agent_id=self.assignee_id,
                                       outcome=OfferOutcome.ACCEPTED, answered_at=now)
        assigned = TicketAssigned(ticket_id=self.ticket_id, agent_id=self.assignee_id,
                                  reason=f"accepted an offer: {self.reason or ''}", assigned_at=now, team=team)
        return self._becomes(
            ("state", "offer_id"), [answered, assigned], state=RoutedTicketState.ASSIGNED, assigned_at=now,
            offer_id=None,
        )

    def reject(self, offer_id: str, now: datetime, cooldown: timedelta) -> "Transition":
        self._must_be_open(offer_id, now)
        return self.return_offer(OfferOutcome.REJECTED, now, cooldown)

    def return_offer(self, outcome: OfferOutcome, now: datetime, cooldown: timedelta) -> "Transition":
        """Rejected, lapsed, or its agent left: back to the queue for the next agent, with its original age.

        That agent is not offered it again within the cooldown; it is looked at again when that ends.
        """
        self._must_be(RoutedTicketState.OFFERED)
        declined = self.declined(self.assignee_id, now)
        answered = TicketOfferAnswered(ticket_id=self.ticket_id, offer_id=self.offer_id, agent_id=self.assignee_id,
                                       outcome=outcome, answered_at=now)
        return self._becomes(
            ("state", "offer_id"), [answered], state=RoutedTicketState.WAITING, assignee_id=None, offer_id=None,
            declines=declined.declines, decline_lapse_at=declined.declines_lapse_at(now, cooldown),
        )

    def revisit_declines(self, now: datetime, cooldown: timedelta) -> "Transition":
        """A decline's cooldown ended: matched again now, and again when the next running one ends."""
        self._must_be(RoutedTicketState.WAITING)
        return self._becomes(("state", "version"), decline_lapse_at=self.declines_lapse_at(now, cooldown))

    def unassign(self, presence: Presence, now: datetime, policy: EscalationPolicy) -> "Transition | None":
        """Its agent went away or offline: back to the queue, with its original age."""
        if self.state is not RoutedTicketState.ASSIGNED:
            return None
        unassigned = TicketUnassigned(
            ticket_id=self.ticket_id, agent_id=self.assignee_id,
            reason=f"agent went {presence.value}; back to the queue with its original age", unassigned_at=now,
        )
        return self._becomes(
            ("state", "assignee_id"), [unassigned], assignee_id=None, previous_assignee_id=self.assignee_id,
            **self._requeued(now, policy),
        )

    def finish(self, how: str, now: datetime) -> "Transition | None":
        """Solved or closed: it leaves the queue, or its agent's capacity (see `slot_holder`)."""
        if self.state is RoutedTicketState.DONE:
            return None
        return self._becomes(
            ("state", "version"), state=RoutedTicketState.DONE, finished_at=now, finished_as=how, offer_id=None
        )

    def reopen(self, previous_assignee_id: str | None, now: datetime, policy: EscalationPolicy) -> "Transition | None":
        """Back to the queue, marked for its previous agent, its declines forgotten."""
        if self.state is not RoutedTicketState.DONE:
            return None
        return self._becomes(
            ("state",), assignee_id=None, return_to=previous_assignee_id or self.assignee_id, declines={},
            decline_lapse_at=None, **self._requeued(now, policy),
        )

    def escalate(self, now: datetime, policy: EscalationPolicy) -> "Transition":
        """The steps that came due, one `ticket.escalated` each; with none due, when to look again."""
        self._must_be(RoutedTicketState.WAITING)
        done = self.escalation_step
        due = policy.due_steps(done, (now - self.queued_at).total_seconds())
        if not due:
            return self._becomes(("state",), next_escalation_at=policy.next_due_at(self.queued_at, done))
        escalated = [
            TicketEscalated(ticket_id=self.ticket_id, step=number, action=step.action.value,
                            description=step.describe(), escalated_at=now)
            for number, step in due
        ]
        last = due[-1][0]
        return self._becomes(
            ("state", "escalation_step"), escalated, escalation_step=last,
            next_escalation_at=policy.next_due_at(self.queued_at, last),
        )

    def _requeued(self, now: datetime, policy: EscalationPolicy) -> dict:
        """Back in the queue: it keeps its original age (`created_at`) and starts its escalation afresh."""
        return {"state": RoutedTicketState.WAITING, "queued_at": now, "escalation_step": 0,
                "next_escalation_at": policy.next_due_at(now, 0)}

    def _must_be(self, state: RoutedTicketState) -> None:
        if self.state is not state:
            raise InvalidTransition(f"ticket {self.ticket_id} is {self.state}, not {state}")

    def _must_be_open(self, offer_id: str, now: datetime) -> None:
        if self.state is not RoutedTicketState.OFFERED or self.offer_id != offer_id:
            raise OfferClosed(f"offer {offer_id} is no longer open")
        if self.offer_expires_at <= now:
            raise OfferClosed(f"offer {offer_id} expired")  # the sweep gives the ticket to the next agent

    def _becomes(self, unchanged: tuple[str, ...], facts: Sequence[Payload] = (), **changes) -> "Transition":
        return Transition(self, self.model_copy(update=changes), unchanged, tuple(facts))


@dataclass(frozen=True)
class Transition:
    """A routed ticket's change: `before` becomes `after`, provided the stored ticket still has `before`'s
    values of the fields `unchanged` names; `facts` are the events it causes."""

    before: RoutedTicket
    after: RoutedTicket
    unchanged: tuple[str, ...]
    facts: tuple[Payload, ...] = ()

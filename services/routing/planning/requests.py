"""What `POST /v1/planning/simulations` takes, checked as it is read: each mistake is a 422 naming it."""

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.routing.domain import Agent, LanguageTag, Mode, Presence, SkillLevel, SkillName, Slots, TeamName, Tier
from shared.events import Channel, Priority

MAX_SHIFTS = 20
MAX_STREAMS = 50
MAX_INTERVALS = 2 * 24 * 4


class ShiftSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> "ShiftSpec":
        if self.end <= self.start:
            raise ValueError("a shift must end after it starts")
        return self


class RosterEntry(BaseModel):
    """An agent as `PUT /v1/agents/{id}` describes one, with the shifts they work (available during them)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
    skills: dict[SkillName, SkillLevel] = Field(default_factory=dict, max_length=100)
    languages: list[LanguageTag] = Field(default_factory=list, max_length=20)
    team: TeamName | None = None
    tier: Tier = Tier.L1
    capacity: Slots | dict[Channel, Slots] = Field(
        description='Tickets held at once: a number (one pool) or per channel, e.g. {"chat": 3, "email": 10}.'
    )
    mode: Mode | None = None
    shifts: list[ShiftSpec] = Field(min_length=1, max_length=MAX_SHIFTS)

    @model_validator(mode="after")
    def _no_overlap(self) -> "RosterEntry":
        shifts = sorted(self.shifts, key=lambda shift: shift.start)
        for before, after in zip(shifts, shifts[1:]):
            if after.start < before.end:
                raise ValueError(
                    f"agent {self.id}: shifts overlap ({before.start.isoformat()}–{before.end.isoformat()} and "
                    f"{after.start.isoformat()}–{after.end.isoformat()})"
                )
        return self

    def as_agent(self) -> Agent:
        return Agent(id=self.id, name=self.id, skills=self.skills, languages=self.languages, team=self.team,
                     tier=self.tier, capacity=self.capacity if isinstance(self.capacity, int)
                     else {channel.value: slots for channel, slots in self.capacity.items()},
                     status=Presence.OFFLINE, mode=self.mode)


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _not_empty(self) -> "Period":
        if self.end <= self.start:
            raise ValueError("the period is empty: end must be after start")
        return self


class RateStream(BaseModel):
    """Poisson arrivals of one kind of ticket: `per_interval[i]` tickets expected in interval i of the period."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel = Channel.WEB
    skills: dict[SkillName, SkillLevel] = Field(default_factory=dict, max_length=20)
    language: LanguageTag | None = None
    priority: Priority = Priority.NORMAL
    per_interval: list[float] = Field(min_length=1, max_length=MAX_INTERVALS)

    @model_validator(mode="after")
    def _not_negative(self) -> "RateStream":
        if any(rate < 0 for rate in self.per_interval):
            raise ValueError("per_interval: rates cannot be negative")
        return self


class ArrivalsSpec(BaseModel):
    """`recorded: true` replays the tickets routing recorded in the period; or `rates`."""

    model_config = ConfigDict(extra="forbid")

    recorded: bool = False
    rates: list[RateStream] = Field(default_factory=list, max_length=MAX_STREAMS)

    @model_validator(mode="after")
    def _one_source(self) -> "ArrivalsSpec":
        if self.recorded == bool(self.rates):
            raise ValueError("give either recorded: true or rates")
        return self


class HandleTimes(BaseModel):
    """`recorded: true` uses each replayed ticket's own handle time (assigned → solved), falling back to
    the distribution (or the period's mean); else the distribution."""

    model_config = ConfigDict(extra="forbid")

    recorded: bool = False
    distribution: str = Field(default="exponential", pattern="^(exponential|lognormal|fixed)$")
    mean_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    sigma: float = Field(default=1.0, gt=0, le=5)


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roster: list[RosterEntry] = Field(min_length=1)
    period: Period
    arrivals: ArrivalsSpec
    handle_times: HandleTimes = HandleTimes(recorded=True)
    interval_minutes: int | None = Field(default=None, description="15, 30 or 60; default PLANNING_INTERVAL_MINUTES.")
    target_seconds: float = Field(default=60, gt=0, le=86400)
    sla_seconds: dict[Priority, float] = Field(
        default_factory=dict, description="Wait past which a ticket of that priority breaches; default target_seconds."
    )
    latency: str = Field(
        default="none", pattern="^(none|recorded)$",
        description="`none`: an instant router; `recorded`: the platform's own delays in the replayed period "
        "(from a ticket's creation to routing seeing it, and from a solve to its slot being given out again).",
    )
    seed: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> "SimulationRequest":
        if self.interval_minutes is not None and self.interval_minutes not in (15, 30, 60):
            raise ValueError("interval_minutes must be 15, 30 or 60")
        ids = [agent.id for agent in self.roster]
        if duplicates := sorted({agent_id for agent_id in ids if ids.count(agent_id) > 1}):
            raise ValueError(f"roster: agents listed twice: {', '.join(duplicates[:10])}")
        if self.latency == "recorded" and not self.arrivals.recorded:
            raise ValueError("latency: recorded needs a recorded period (arrivals.recorded)")
        if any(seconds <= 0 for seconds in self.sla_seconds.values()):
            raise ValueError("sla_seconds must be positive")
        return self

"""Who should take a ticket. Pure: no I/O, so the matching rules are tested on their own."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared.events import SKILL_PATTERN, Priority

SkillName = Annotated[str, Field(pattern=SKILL_PATTERN)]
SkillLevel = Annotated[int, Field(ge=1, le=5)]


class Presence(StrEnum):
    AVAILABLE = "available"
    AWAY = "away"
    OFFLINE = "offline"


class AgentProfile(BaseModel):
    """What a workforce system or an admin says about an agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    skills: dict[SkillName, SkillLevel] = Field(default_factory=dict, max_length=100)
    capacity: int = Field(ge=0, le=1000, description="Tickets the agent can hold at once.")
    status: Presence = Presence.OFFLINE


class Agent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    skills: dict[str, int]
    capacity: int
    status: Presence
    load: int = Field(description="Tickets assigned and not yet released.")
    version: int = 1

    @computed_field
    @property
    def free(self) -> int:
        return max(self.capacity - self.load, 0)

    def with_profile(self, profile: AgentProfile) -> "Agent":
        """Profile changes keep the agent's current load: tickets already held stay held."""
        return self.model_copy(update={**profile.model_dump(), "version": self.version + 1})


class WaitingTicket(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticket_id: str
    priority: Priority
    required_skills: list[str]
    created_at: datetime


@dataclass(frozen=True)
class Match:
    agent: Agent
    reason: str


def can_take(agent: Agent, ticket: WaitingTicket) -> bool:
    return (
        agent.status is Presence.AVAILABLE
        and agent.free > 0
        and all(agent.skills.get(skill, 0) >= 1 for skill in ticket.required_skills)
    )


def choose_agent(candidates: list[Agent], ticket: WaitingTicket) -> Match | None:
    """The least utilised eligible agent; ties go to the one with the most free slots, then by id."""
    eligible = [agent for agent in candidates if can_take(agent, ticket)]
    if not eligible:
        return None
    best = min(eligible, key=lambda agent: (agent.load / agent.capacity, -agent.free, agent.id))
    skills = ", ".join(f"{skill} {best.skills[skill]}" for skill in ticket.required_skills) or "none required"
    return Match(
        best,
        f"skills: {skills}; least utilised of {len(eligible)} eligible ({best.load}/{best.capacity} before)",
    )


def queue_order(ticket: WaitingTicket) -> tuple[int, datetime]:
    """Most urgent first, then oldest first."""
    return (-ticket.priority.rank, ticket.created_at)

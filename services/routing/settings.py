"""Routing's settings: environment variables only; a bad escalation workflow stops the service at start."""

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode

from services.routing.domain import DECLINE_COOLDOWN, EscalationPolicy, Mode, Presence
from services.routing.planning.service import PlanningLimits
from shared import rules_file
from shared.rules_file import RulesFileError
from shared.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    http_port: int = 8002
    mongodb_database: str = "switchboard_routing"
    queue_sweep_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often waiting tickets are matched again, escalated, and offers expired."
    )
    routing_mode: Mode = Field(default=Mode.AUTO, description="`auto` assigns directly; `offer` reserves and asks.")
    offer_timeout_seconds: float = Field(default=120.0, gt=0, description="An unanswered offer goes to the next agent.")
    offer_decline_cooldown_seconds: float = Field(
        default=DECLINE_COOLDOWN.total_seconds(),
        ge=0,
        description="An agent who rejected a ticket's offer or let it lapse is not offered that ticket again for this "
        "long; after it, only when nobody else is eligible.",
    )
    unassign_on_presence: Annotated[list[Presence], NoDecode] = Field(
        default_factory=lambda: [Presence.OFFLINE],
        description="Presences that send an agent's open tickets back to the queue (comma-separated; empty: never).",
    )
    affinity_window_seconds: float = Field(
        default=7 * 24 * 3600, ge=0, description="How long routing prefers the agent who last helped a customer."
    )
    planning_interval_minutes: Literal[15, 30, 60] = Field(
        default=15, description="Planning's default interval (history, forecast, staffing, simulations)."
    )
    planning_forecast_weeks: int = Field(default=4, ge=1, le=12, description="Same weekdays the forecast averages.")
    planning_simulation_max_tickets: int = Field(default=100_000, ge=1, description="Tickets one simulation may replay.")
    planning_simulation_max_agents: int = Field(default=2_000, ge=1, description="Agents one simulation's roster may hold.")
    planning_simulation_max_days: float = Field(default=2.0, gt=0, le=31, description="Longest period one simulation covers.")
    planning_simulations_running: int = Field(
        default=2, ge=1, le=16, description="Simulations running at once per replica (each is a thread of CPU work)."
    )
    escalation_file: Path | None = Field(default=None, description="YAML (or JSON) file with the escalation workflow.")
    escalation_json: str | None = Field(default=None, description="The escalation workflow as JSON, instead of a file.")

    @field_validator("unassign_on_presence", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _escalation_valid(self) -> "RoutingSettings":
        self.escalation_policy()  # raises with the reason
        return self

    def escalation_policy(self) -> EscalationPolicy:
        if self.escalation_file and self.escalation_json:
            raise ValueError("set ESCALATION_FILE or ESCALATION_JSON, not both")
        if self.escalation_file:
            try:
                return rules_file.load(EscalationPolicy, self.escalation_file)
            except RulesFileError as invalid:
                raise ValueError(f"ESCALATION_FILE: invalid escalation workflow: {invalid}") from None
        if not self.escalation_json:
            return EscalationPolicy()
        try:
            raw = json.loads(self.escalation_json)
        except json.JSONDecodeError as error:
            raise ValueError(f"ESCALATION_JSON: cannot read the escalation workflow: {error}") from None
        try:
            return EscalationPolicy.model_validate(raw or {})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'workflow'}: {e['msg']}" for e in error.errors(include_url=False)
            )
            raise ValueError(f"ESCALATION_JSON: invalid escalation workflow: {problems}") from None

    def planning_limits(self) -> PlanningLimits:
        return PlanningLimits(
            interval_minutes=self.planning_interval_minutes, forecast_weeks=self.planning_forecast_weeks,
            max_tickets=self.planning_simulation_max_tickets, max_agents=self.planning_simulation_max_agents,
            max_days=self.planning_simulation_max_days, max_running=self.planning_simulations_running,
        )

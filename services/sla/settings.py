from pathlib import Path

from pydantic import Field

from services.sla.policy import DEFAULT_POLICIES_PATH
from shared.settings import ServiceSettings


class SlaSettings(ServiceSettings):
    http_port: int = 8003
    mongodb_database: str = "switchboard_sla"
    sla_policies_path: Path = Field(
        default=DEFAULT_POLICIES_PATH,
        description="The YAML file of SLA policies and calendars; an invalid one stops the service at start.",
    )
    sla_scheduler_horizon_seconds: float = Field(
        default=60.0, gt=0, description="How far ahead the timers of clocks are held in memory."
    )
    sla_scheduler_reload_seconds: float = Field(
        default=2.0, gt=0, description="How often the near horizon is read again from the clocks' due-time index."
    )
    sla_scheduler_max_loaded: int = Field(
        default=50_000, ge=100, description="Most timers held in memory; a fuller horizon is read in later windows."
    )
    sla_scheduler_batch_size: int = Field(default=200, ge=1, description="Most timers fired in one transaction.")
    sla_timer_lease_seconds: float = Field(
        default=5.0, gt=0, description="Lease of the replica running the timers; a standby takes over after it."
    )
    sla_policy_reload_batch_size: int = Field(
        default=200, ge=1, description="Most tickets reconciled in one transaction after the policy file changed."
    )

from pydantic import Field

from shared.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    http_port: int = 8002
    mongodb_database: str = "switchboard_routing"
    queue_sweep_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often waiting tickets are matched again, as a safety net."
    )

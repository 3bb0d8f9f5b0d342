from pydantic import Field

from shared.settings import ServiceSettings


class SlaSettings(ServiceSettings):
    http_port: int = 8003
    mongodb_database: str = "switchboard_sla"
    first_reply_target_seconds: int = Field(
        default=3600, gt=0, description="The one first-reply target until SLA policies arrive."
    )

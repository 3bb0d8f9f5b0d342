from pydantic import Field

from shared.settings import ServiceSettings


class InsightsSettings(ServiceSettings):
    http_port: int = 8005
    mongodb_database: str = "switchboard_insights"
    insights_max_range_days: int = Field(
        default=400, ge=1, description="Longest from..to a report may span; a longer one is refused with 422."
    )
    insights_default_range_days: int = Field(default=30, ge=1, description="The range of a report given no `from`.")

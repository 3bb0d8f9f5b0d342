"""Intake's settings: environment variables only; a bad triage rules file stops the service at start."""

from pathlib import Path

from pydantic import Field, SecretStr

from services.intake.triage import RULES_FILE
from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8001
    mongodb_database: str = "switchboard_intake"
    triage_rules_path: Path = Field(default=RULES_FILE, description="The YAML triage rules file.")
    reopen_window_seconds: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="A customer reply within this long after solving reopens the ticket; later, it starts a "
        "follow-up ticket, and the solved ticket is closed.",
    )
    csat_signing_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC notify signs survey links (CSAT and NPS) with; unset: survey answers 503.",
    )
    inbound_email_signing_key: SecretStr | None = Field(
        default=None, description="Key of the HMAC that signs inbound email webhooks; unset: the webhook answers 503."
    )
    inbound_email_tolerance_seconds: int = Field(
        default=300, ge=1, description="Largest accepted clock difference of a signed webhook's timestamp."
    )

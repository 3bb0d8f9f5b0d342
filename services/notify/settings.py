from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from services.notify.rules import RULES_FILE
from services.notify.templates import TEMPLATES_DIRECTORY
from shared.outbound import Allowlist
from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    http_port: int = 8004
    mongodb_database: str = "switchboard_notify"
    smtp_url: SecretStr = Field(
        default=SecretStr("smtp://127.0.0.1:2525"),
        description="smtp://[user:password@]host:port[?starttls=true|false] (unset: STARTTLS when offered), or smtps:// for implicit TLS.",
    )
    mail_from: str = "Switchboard Support <support@switchboard.local>"
    delivery_max_attempts: int = Field(default=8, ge=1, description="Sends tried before a delivery is failed.")
    delivery_retry_base_seconds: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    delivery_retry_cap_seconds: float = Field(default=900.0, gt=0, description="Longest wait between two tries.")
    delivery_claim_seconds: float = Field(
        default=120.0, gt=0, description="How long a replica holds a delivery it is sending before another may retry it."
    )
    sender_poll_interval_seconds: float = Field(default=0.5, gt=0)
    notify_rules_path: Path = Field(default=RULES_FILE, description="The YAML file mapping events to notifications.")
    notify_templates_dir: Path = Field(default=TEMPLATES_DIRECTORY, description="Jinja2 templates, <kind>.<locale>.<part>.j2.")
    intake_public_url: str = Field(default="http://127.0.0.1:8001", description="Where CSAT and NPS links point.")
    csat_signing_key: SecretStr = Field(default=SecretStr(""), description="Signs CSAT and NPS links; intake checks them.")
    csat_link_ttl_seconds: float = Field(
        default=14 * 24 * 3600, gt=0, description="How long a CSAT or NPS link works after it is sent."
    )
    webhook_signing_key: SecretStr = Field(default=SecretStr(""), description="Signs outgoing webhooks and SMS requests.")
    team_webhook_url: str = Field(default="", description="Slack-compatible webhook of the support team (SLA breaches).")
    supervisors_webhook_url: str = Field(default="", description="Slack-compatible webhook of the supervisors.")
    sms_provider_url: str = Field(default="", description="The SMS provider's HTTP webhook.")
    outbound_url_allowlist: str = Field(
        default="",
        description="Internal targets webhooks and SMS requests may reach: comma-separated hosts, host:port or CIDRs.",
    )
    rate_limit_per_recipient: int = Field(default=10, ge=1, description="Non-urgent messages per recipient per window.")
    max_event_age_seconds: float = Field(
        default=3 * 24 * 3600, gt=0, description="Events older than this owe only a suppression (stale history)."
    )
    rate_limit_window_seconds: float = Field(default=3600, gt=0, description="The rate limit's window; the digest goes at its end.")

    @field_validator("outbound_url_allowlist")
    @classmethod
    def _allowlist_valid(cls, value: str) -> str:
        Allowlist.parse(value)  # refuses a malformed entry at start, naming it
        return value

    def allowlist(self) -> Allowlist:
        return Allowlist.parse(self.outbound_url_allowlist)

from pydantic import Field, SecretStr

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    http_port: int = 8004
    mongodb_database: str = "switchboard_notify"
    smtp_url: SecretStr = Field(
        default=SecretStr("smtp://127.0.0.1:2525"),
        description="smtp://[user:password@]host:port[?starttls=true], or smtps:// for implicit TLS.",
    )
    mail_from: str = "Switchboard Support <support@switchboard.local>"
    delivery_max_attempts: int = Field(default=8, ge=1, description="Sends tried before a delivery is failed.")
    delivery_retry_base_seconds: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    sender_poll_interval_seconds: float = Field(default=0.5, gt=0)

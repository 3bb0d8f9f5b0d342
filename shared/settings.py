"""Configuration from environment variables only, with embedded-stack defaults."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.access import parse_scopes


class ServiceSettings(BaseSettings):
    """What every service reads. Each service subclasses it to set its own port and database."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = Field(default=6, ge=1, description="Partitions for topics a service creates.")
    mongodb_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    mongodb_database: str
    mongodb_transaction_lock_dir: Path | None = Field(
        default=None,
        description="Embedded Mongo-wire server only: where the per-database lock files that serialize "
        "transactions across processes live.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(ge=1, le=65535)
    switchboard_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer keys accepted on the HTTP API."
    )
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    consumer_max_attempts: int = Field(default=5, ge=1, description="Tries before a message is dead-lettered.")
    consumer_retry_backoff_seconds: float = Field(default=0.2, ge=0)
    consumer_batch_size: int = Field(default=200, ge=1)
    outbox_poll_interval_seconds: float = Field(default=0.5, gt=0)
    outbox_linger_seconds: float = Field(
        default=0.1,
        ge=0,
        description="After a round that relayed less than a full batch, how long the relay waits before the next, "
        "so the events committed meanwhile go out together.",
    )
    outbox_replay_on_start_seconds: float = Field(
        default=0,
        ge=0,
        description="Re-publish the events sent in this many past seconds at start (the launcher sets it when "
        "it starts a fresh in-memory broker); consumers' inboxes drop the ones they had processed.",
    )
    cloudevents_mode: Literal["structured", "binary"] = Field(
        default="structured",
        description="The CloudEvents Kafka content mode of the events a service publishes; it reads both.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object a line, with the correlation id; text: for reading by eye."
    )
    consumer_lag_interval_seconds: float = Field(
        default=15.0, gt=0, description="Consumer lag is measured when /metrics is read, at most once in this time."
    )
    api_key_scopes: SecretStr = Field(
        default=SecretStr(""),
        description="`key=tickets:read tickets:write; key2=tickets:read agents`; a key not listed has every scope.",
    )
    rate_limit_per_minute: int = Field(default=6000, ge=0, description="Requests per minute per API key and replica; 0: none.")

    @field_validator("api_key_scopes")
    @classmethod
    def _scopes_valid(cls, value: SecretStr) -> SecretStr:
        parse_scopes(value.get_secret_value())  # refuses a malformed value at start, saying which entry
        return value

    def scopes(self) -> dict[str, frozenset[str]]:
        return parse_scopes(self.api_key_scopes.get_secret_value())

    @field_validator("switchboard_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

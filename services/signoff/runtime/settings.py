"""Settings, read from SIGNOFF_* environment variables, then secret files, then a running dev stack's env file.

Secrets (database URL with a password, SASL password, decision-source keys) are never defaults in code: set them
in the environment or as files in $SIGNOFF_SECRETS_DIR (one file per setting, named like the variable in lower
case, e.g. `signoff_database_url`), which is how Kubernetes Secrets are mounted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from signoff.runtime.devenv import find_env_file, supervisor_alive


class Settings(BaseSettings):
    """Settings shared by every role. Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE>."""

    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", extra="ignore", case_sensitive=False)

    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    kafka_enable_idempotence: bool = Field(
        True, description="Idempotent producer; on for real Kafka, off for the embedded Tansu broker (it refuses it)."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle for SSL / SASL_SSL (e.g. the Strimzi cluster CA)."
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Consumer group session timeout; a group join waits about half of it."
    )
    kafka_heartbeat_interval_ms: int = Field(3_000, ge=100)
    kafka_group_instance_id: str | None = Field(
        None,
        description="Static group membership (KIP-345): a stable id per replica (e.g. a StatefulSet pod name). A "
        "replica restarted with the same id takes its partitions back at once instead of waiting for its dead "
        "predecessor's session to time out; while it is down, nobody else takes them for the session timeout. "
        "Needs Kafka >= 2.3 (Tansu has it); unset (the default): dynamic membership.",
    )
    kafka_topic_partitions: int = Field(6, ge=1, description="Partitions for topics created at start-up.")
    kafka_topic_replication: int = Field(1, ge=1, description="Replication factor for topics created at start-up.")
    kafka_create_topics: bool = Field(
        True, description="Create missing topics at start-up (off where Strimzi KafkaTopic resources own them)."
    )

    consumer_max_batch: int = Field(
        1000,
        ge=1,
        description="Most events applied in one database transaction (1 = a transaction and an offset commit per "
        "event, the naive consumer the benchmark compares with).",
    )

    inbox_retention_days: float = Field(
        30,
        gt=0,
        description="How long the inbox remembers an applied event's id (duplicates within it are skipped); "
        "older rows are deleted hourly. Keep it above the topics' retention, so a redelivered record is still known.",
    )

    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@localhost:5432/signoff"), description="PostgreSQL DSN (libpq URL)."
    )
    database_pool_min: int = Field(1, ge=0)
    database_pool_max: int = Field(10, ge=1)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_a_url(cls, value: SecretStr) -> SecretStr:
        # asyncpg reads only URLs, and an empty one as "libpq's defaults" (the local socket, the OS user): an
        # empty or keyword-style value would reach some other database than the one meant, or a confusing error.
        if not value.get_secret_value().strip().startswith(("postgresql://", "postgres://")):
            raise ValueError("not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files before the dev stack's env file (pydantic's default puts the env file first): a mounted
        # secret is the deployment's, the env file only a local stack that happens to run.
        return init_settings, env_settings, file_secret_settings, dotenv_settings

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError(
                f"SIGNOFF_DATABASE_POOL_MIN ({self.database_pool_min}) is over SIGNOFF_DATABASE_POOL_MAX "
                f"({self.database_pool_max})"
            )
        return self

    http_host: str = Field("0.0.0.0", description="Bind address of /healthz, /readyz and /metrics.")  # noqa: S104
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics (0 = any).")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON otherwise."
    )


S = TypeVar("S", bound="Settings")


def load_settings(settings_class: type[S] = Settings, **overrides: object) -> S:  # type: ignore[assignment]
    """Settings (of `settings_class`, e.g. a role's subclass) from the environment, secret files and (lowest
    priority) a running dev stack's env file."""
    env_file = find_env_file()
    if env_file is not None and not supervisor_alive(env_file.parent):
        env_file = None
    secrets_dir = os.environ.get("SIGNOFF_SECRETS_DIR")
    return settings_class(
        _env_file=env_file,  # type: ignore[call-arg]
        _secrets_dir=secrets_dir if secrets_dir and Path(secrets_dir).is_dir() else None,  # type: ignore[call-arg]
        **overrides,
    )


def setting_problem(exc: ValidationError, settings_class: type[BaseSettings] = Settings) -> str:
    """`SIGNOFF_NAME: what is wrong` for the first error (and how many more), without the value given."""
    errors = exc.errors()
    first = errors[0]
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    # A check across settings (no location) names its variables in its message.
    name = f"{prefix}{'_'.join(str(part) for part in first['loc']).upper()}: " if first["loc"] else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}{first['msg'].removeprefix('Value error, ')}{more}"

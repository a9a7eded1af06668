"""Settings of the approval role: the shared ones plus timeouts, decision-source keys and the directory file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from signoff.contracts import parse_duration
from signoff.runtime.settings import Settings


class ApprovalSettings(Settings):
    """Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE> (or a file of that name in the secrets dir)."""

    default_timeout: str = Field("1d", description="Timeout of a gate whose request names none (Harness syntax).")
    max_timeout: str = Field("30d", description="No gate waits longer than this, whatever its request says.")
    # One secret holding a JSON object (not a dict field): a secret file is then read as it is, and a malformed
    # value is reported by `decision_key_map` without ever echoing the secret.
    decision_keys: SecretStr | None = Field(
        None,
        description='Decision source -> HMAC key, as a JSON object (e.g. {"cli": "…", "slack": "…"}). A secret.',
    )
    directory_file: Path | None = Field(
        None, description="YAML of user groups -> members (user, email, slack, teams), loaded at start-up."
    )
    decision_max_age: str = Field(
        "10m",
        description="A decision whose decided_at is further than this from its arrival is refused (stale_decision).",
    )
    approval_page_url: str = Field(
        "http://127.0.0.1:8080/",
        pattern=r"^https?://",
        description="The api's public URL, as the notifier's: the CDEvents link to <base>/gates/<gate id> and "
        "<base>/api/v1/executions/<execution id>.",
    )
    expiry_interval_seconds: float = Field(5.0, gt=0, description="How often the expiry loop looks for due gates.")
    metrics_pipelines: str = Field(
        "",
        description="Pipeline ids, comma-separated, that label signoff_gate_wait_seconds by name (every other is "
        "`other`); empty: the first SIGNOFF_METRICS_PIPELINE_LIMIT pipelines each replica sees.",
    )
    metrics_pipeline_limit: int = Field(
        50, ge=0, description="Without SIGNOFF_METRICS_PIPELINES: how many pipelines get a label of their own."
    )
    metrics_expiring_within: str = Field(
        "1h", description="signoff_gates_expiring_soon counts pending gates due within this (Harness syntax)."
    )
    metrics_gauge_interval_seconds: float = Field(
        15.0, gt=0, description="How often signoff_gates_pending and signoff_gates_expiring_soon are counted."
    )

    @field_validator("default_timeout", "max_timeout", "decision_max_age", "metrics_expiring_within")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _default_within_max(self) -> ApprovalSettings:
        if self.default_timeout_span > self.max_timeout_span:  # every request naming no timeout would be refused
            raise ValueError(
                f"SIGNOFF_DEFAULT_TIMEOUT ({self.default_timeout}) is over SIGNOFF_MAX_TIMEOUT ({self.max_timeout})"
            )
        return self

    @property
    def default_timeout_span(self) -> timedelta:
        return parse_duration(self.default_timeout)

    @property
    def max_timeout_span(self) -> timedelta:
        return parse_duration(self.max_timeout)

    @property
    def decision_max_age_span(self) -> timedelta:
        return parse_duration(self.decision_max_age)

    @property
    def metrics_expiring_within_span(self) -> timedelta:
        return parse_duration(self.metrics_expiring_within)

    @property
    def metrics_pipeline_ids(self) -> list[str]:
        return [pipeline.strip() for pipeline in self.metrics_pipelines.split(",") if pipeline.strip()]

    @field_validator("decision_keys", mode="before")
    @classmethod
    def _keys_as_json(cls, value: object) -> object:
        # Also accept a mapping (tests, programmatic use): kept as its JSON text.
        if isinstance(value, dict):
            return json.dumps({k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in value.items()})
        return value

    def decision_key_map(self) -> dict[str, SecretStr]:
        """Decision source -> key. Raises ValueError (without the secret) when the setting is not a JSON object of
        non-empty strings."""
        if self.decision_keys is None:
            return {}
        try:
            parsed = json.loads(self.decision_keys.get_secret_value())
        except json.JSONDecodeError:
            raise ValueError("SIGNOFF_DECISION_KEYS is not valid JSON") from None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items()
        ):
            raise ValueError("SIGNOFF_DECISION_KEYS must be a JSON object of source name -> non-empty key")
        return {source: SecretStr(key) for source, key in parsed.items()}

    def decision_key(self, source: str) -> bytes | None:
        """The key of decision source `source`, or None when none is configured."""
        secret = self.decision_key_map().get(source)
        return secret.get_secret_value().encode() if secret is not None else None

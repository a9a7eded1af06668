"""Settings of the approver's commands: the shared ones plus who is deciding and the CLI's decision key."""

from __future__ import annotations

from pydantic import Field, SecretStr

from signoff.runtime.settings import Settings


class CliSettings(Settings):
    """Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE> (or a secret file, or a dev stack's env file)."""

    user: str | None = Field(None, description="The approver's user id when `--as` is not given.")
    cli_decision_key: SecretStr | None = Field(
        None, description="HMAC key of decision source `cli` (the approval role's SIGNOFF_DECISION_KEYS['cli'])."
    )
    decision_wait_seconds: float = Field(
        30.0, gt=0, description="How long a decision command waits for the approval service's answer."
    )

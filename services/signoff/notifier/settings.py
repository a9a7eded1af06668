"""Settings of the notifier role: the shared ones plus routing, catalog, approval page and delivery behaviour."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, model_validator

from signoff.runtime.settings import Settings


class NotifierSettings(Settings):
    """Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE> (or a file of that name in the secrets dir)."""

    routing_file: Path | None = Field(
        None,
        description="Routing YAML (docs/notifications.md). Unset: every notification goes to one `log` channel.",
    )
    catalog_file: Path | None = Field(
        None, description="Catalog YAML (docs/catalog.md) that names services, environments, infrastructures."
    )
    approval_page_url: str = Field(
        "http://127.0.0.1:8080/",
        pattern=r"^https?://",
        description="Base URL of the approval page; links are <base>/gates/<gate id>?action=approve|reject.",
    )
    channel_secrets_dir: Path | None = Field(
        None,
        description="Folder of channel secrets (a file per routing `secret_ref`); else $SIGNOFF_SECRETS_DIR.",
    )
    delivery_max_attempts: int = Field(8, ge=1, le=100, description="Tries per delivery before it is dead-lettered.")
    delivery_backoff_base_seconds: float = Field(2.0, gt=0, description="Wait after the first failed try.")
    delivery_backoff_cap_seconds: float = Field(600.0, gt=0, description="Longest wait between two tries.")
    delivery_lease_seconds: float = Field(
        120.0, gt=0, description="A claimed delivery not finished within this is tried again (crashed replica)."
    )
    channel_concurrency: int = Field(
        8, ge=1, le=1000, description="Sends in flight per channel (routing `settings.concurrency` overrides)."
    )
    channel_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one send (routing `settings.timeout_seconds` overrides)."
    )
    dispatch_interval_seconds: float = Field(
        1.0, gt=0, description="Polling fallback of the dispatcher and the reminder scheduler (NOTIFY wakes them)."
    )

    @model_validator(mode="after")
    def _cap_over_base(self) -> NotifierSettings:
        if self.delivery_backoff_cap_seconds < self.delivery_backoff_base_seconds:
            raise ValueError(
                f"SIGNOFF_DELIVERY_BACKOFF_CAP_SECONDS ({self.delivery_backoff_cap_seconds:g}) is under "
                f"SIGNOFF_DELIVERY_BACKOFF_BASE_SECONDS ({self.delivery_backoff_base_seconds:g})"
            )
        return self

    @property
    def backoff_base(self) -> timedelta:
        return timedelta(seconds=self.delivery_backoff_base_seconds)

    @property
    def backoff_cap(self) -> timedelta:
        return timedelta(seconds=self.delivery_backoff_cap_seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.delivery_lease_seconds)

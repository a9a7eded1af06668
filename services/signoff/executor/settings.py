"""Settings of the executor role: the shared ones plus the catalog, the runner's poll interval and the script lease."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from signoff.runtime.settings import Settings


class ExecutorSettings(Settings):
    """Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE> (or a file of that name in the secrets dir)."""

    catalog_file: Path | None = Field(
        None,
        description="Catalog YAML (docs/catalog.md): pipeline refs are checked against it and approval requests "
        "carry the stage metadata it resolves. Unset: refs are not checked and stay unresolved.",
    )
    runner_poll_seconds: float = Field(
        1.0, gt=0, description="How often the runner looks for due waits and script deadlines besides its wake-ups."
    )
    max_scripts: int = Field(
        32,
        ge=1,
        le=10_000,
        description="ShellScript processes this replica runs at once; a step started beyond it waits for a slot "
        "(its timeout counts meanwhile), so a burst of runs cannot fork without bound.",
    )
    script_runner_socket: Path | None = Field(
        None,
        description="The Unix socket of a script runner (`signoff script-runner`): ShellScript steps run there, "
        "away from this role's keys (docs/deploying.md, \"What a pipeline's script can reach\"). Unset: they run "
        "as processes of this role, as its user.",
    )
    script_lease_seconds: float = Field(
        30.0,
        ge=1,
        description="A replica running scripts renews its claim on their executions every quarter of this (and kills "
        "its scripts when it could not for three quarters); when it stops "
        "renewing (it died), another replica applies the restart rule after this long.",
    )

"""`signoff schemas generate [--check]`: the JSON Schemas and AsyncAPI document in schemas/, from the contracts."""

from __future__ import annotations

from pathlib import Path

import click

from signoff.cli.errors import CliError
from signoff.contracts import schemagen


@click.group()
def schemas() -> None:
    """Wire schemas generated from the event contracts."""


@schemas.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory of the generated files.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the files differ from what would be generated.")
def generate(out: Path, check: bool) -> None:
    """Write one JSON Schema per event type and asyncapi.yaml (byte-identical on every run)."""
    if check:
        drifted = schemagen.drift(out)
        if drifted:
            raise CliError(
                f"{out}/ differs from the contracts: {', '.join(drifted)}; run `signoff schemas generate --out {out}`"
            )
        click.echo(f"{out}/ matches the contracts")
        return
    changed = schemagen.write(out)
    click.echo(f"{out}/: {len(changed)} file(s) updated" + (f": {', '.join(changed)}" if changed else ""))

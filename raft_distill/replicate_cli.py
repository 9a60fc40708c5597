"""`raft-distill replicate`: fit every arm x seed, evaluate all of them, write the report.

`replicate_cmd` is a click command for the `raft-distill` group (registered as
`replicate`). It can also run alone: `python -m raft_distill.replicate_cli CONFIG`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from raft_distill.errors import DistillError
from schemas import SchemaError


def command_line(config: str, overrides: tuple[str, ...]) -> str:
    """The command as a user would retype it (independent of how it was launched)."""
    args = ["raft-distill", "replicate", config]
    for item in overrides:
        args += ["--set", item]
    return shlex.join(args)


@click.command("replicate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a replicate config key, e.g. --set seeds=[0,1,2] (repeatable)",
)
@click.option(
    "--export",
    "export_to",
    type=click.Path(file_okay=False),
    help="then copy the run's results without weights to this folder (a later run's prior_runs)",
)
@click.option("--export-only", is_flag=True, help="export what output_dir holds now; run nothing")
def replicate_cmd(
    config: str, overrides: tuple[str, ...], export_to: str | None, export_only: bool
) -> None:
    """Replicate the paper's comparison as CONFIG (YAML) says: base / SFT / RAFT / ablations,
    several seeds, one eval run, report.md + report.json + report.png."""
    try:
        from raft_distill.replicate.carry import export_run
        from raft_distill.replicate.config import load_replicate_config
        from raft_distill.replicate.run import replicate

        cfg = load_replicate_config(config, list(overrides))
        if export_only and export_to is None:
            raise DistillError("--export-only needs --export DIR")
        if not export_only:
            replicate(cfg, command_line(config, overrides), log=lambda line: click.echo(line, err=True))
        if export_to is not None:
            copied = export_run(Path(cfg.output_dir), Path(export_to))
            click.echo(f"exported {len(copied)} files to {export_to} (no weights)", err=True)
            if export_only:
                return
    except (DistillError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(Path(cfg.output_dir, "report.md").read_text(), nl=False)


if __name__ == "__main__":
    replicate_cmd()

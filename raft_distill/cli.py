"""`raft-distill`: load a YAML config, validate it, run stage 2, print a summary."""

from __future__ import annotations

import json
import sys

import click

from raft_distill.errors import DistillError
from schemas import SchemaError


@click.group()
def main() -> None:
    """RAFT stage 2: answer-conditioned on-policy distillation."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in output_dir")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key, e.g. --set train.max_steps=20 (repeatable)",
)
def fit(config: str, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train the student on a fused dataset as CONFIG (YAML) says."""
    try:
        from raft_distill.config import load_config
        from raft_distill.train import fit as run_fit

        cfg = load_config(config, list(overrides))
        result = run_fit(cfg, resume=resume)
    except (DistillError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    if result.is_main_process:
        click.echo(json.dumps(result.summary, indent=2))


def _register_commands() -> None:
    from raft_distill.eval_cli import eval_cmd
    from raft_distill.replicate_cli import replicate_cmd

    main.add_command(eval_cmd, name="eval")
    main.add_command(replicate_cmd, name="replicate")


_register_commands()

if __name__ == "__main__":
    main()

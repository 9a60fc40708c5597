"""`raft-distill eval`: load a YAML config, evaluate each model on each suite, print a table.

`eval_cmd` is a click command; the `raft-distill` group registers it as `eval`.
It can also run alone: `python -m raft_distill.eval_cli CONFIG`.
"""

from __future__ import annotations

import sys

import click

from raft_distill.errors import DistillError
from schemas import SchemaError


@click.command("eval")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key, e.g. --set suites.domain.limit=20 (repeatable)",
)
def eval_cmd(config: str, overrides: tuple[str, ...]) -> None:
    """Evaluate the models of CONFIG (YAML): domain accuracy, general QA, IFEval, general
    multiple choice; scores with 95% intervals, models compared per item."""
    try:
        from raft_distill.evaluate.config import load_eval_config
        from raft_distill.evaluate.report import summary_markdown
        from raft_distill.evaluate.run import evaluate

        cfg = load_eval_config(config, list(overrides))
        results = evaluate(cfg, log=lambda line: click.echo(line, err=True))
    except (DistillError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(summary_markdown(results, cfg.reference, cfg.bootstrap), nl=False)
    click.echo(f"results: {cfg.output_dir}/summary.json, summary.md", err=True)


if __name__ == "__main__":
    eval_cmd()

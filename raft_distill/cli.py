"""`raft-distill`: load a YAML config, validate it, run stage 2, print a summary."""

from __future__ import annotations

import json
import sys
from typing import cast

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


@main.command()
@click.option("--base", required=True, help="the pre-trained model: embedded name, HF folder or Hub id")
@click.option("--finetuned", required=True, help="the fine-tuned model folder (e.g. runs/x/final)")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="pruned HF folder")
@click.option(
    "--ratio",
    type=click.FloatRange(0.0, 1.0),
    default=0.9,
    show_default=True,
    help="fraction of each matrix's task-vector entries zeroed (the paper's 90%)",
)
@click.option(
    "--targets",
    type=click.Choice(["linear", "all"]),
    default="linear",
    show_default=True,
    help="linear: the decoder layers' projection weights (embeddings, head, norms stay "
    "fine-tuned); all: every floating-point tensor",
)
@click.option("--overwrite", is_flag=True, help="replace a non-empty output folder")
def prune(base: str, finetuned: str, output: str, ratio: float, targets: str, overwrite: bool) -> None:
    """FAPM (arXiv 2509.08255): prune the task vector W_ft - W_pre of a fine-tuned model by
    |dW| - mean(|W_pre|) * |dW| / |W_pre|, per matrix; no training, no data."""
    try:
        from raft_distill.prune import Targets
        from raft_distill.prune import prune as run_prune

        kind = cast(Targets, targets)
        report = run_prune(base, finetuned, output, ratio=ratio, targets=kind, overwrite=overwrite)
    except (DistillError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(json.dumps(report, indent=2))


def _grid(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        grid = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"'{value}': comma-separated numbers, e.g. 0,0.5,1") from None
    if not grid or any(not 0.0 <= a <= 1.0 for a in grid):
        raise click.BadParameter(f"'{value}': alphas in [0, 1], at least one")
    return grid


@main.command()
@click.option("--base", required=True, help="the pre-trained model: embedded name, HF folder or Hub id")
@click.option("--finetuned", required=True, help="the fine-tuned model folder (e.g. runs/x/final)")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="merged HF folder")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), help="fixed alpha (0 base, 1 fine-tuned)")
@click.option("--val", help="choose alpha instead: domain validation JSONL (question, answer)")
@click.option("--grid", default="0,0.3,0.5,0.7,0.9,1", show_default=True, callback=_grid,
              help="alphas tried with --val")
@click.option("--mc-items", type=click.IntRange(1), default=50, show_default=True,
              help="validation items per general multiple-choice task")
@click.option("--mc-seed", type=int, default=1, show_default=True, help="their selection seed")
@click.option("--eval-config", type=click.Path(dir_okay=False),
              help="eval YAML whose general_mc items (and tasks) the validation avoids")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="bfloat16",
              show_default=True, help="scoring dtype for --val (the output keeps the model's)")
@click.option("--overwrite", is_flag=True, help="replace a non-empty output folder")
def merge(
    base: str, finetuned: str, output: str, alpha: float | None, val: str | None,
    grid: list[float], mc_items: int, mc_seed: int, eval_config: str | None, dtype: str,
    overwrite: bool,
) -> None:
    """WiSE-FT (arXiv 2109.01903): theta0 + alpha * (theta_ft - theta0) for every weight, at
    --alpha, or at the alpha that scores best on domain NLL + general MC (--val)."""
    try:
        from raft_distill.merge import Validation, report_selection
        from raft_distill.merge import merge as run_merge

        if (alpha is None) == (val is None):
            raise DistillError("give --alpha (fixed) or --val (choose alpha on validation data)")
        validation = None
        if val is not None:
            avoid: dict = {}
            if eval_config:
                from raft_distill.evaluate.config import load_eval_config

                avoid = report_selection(load_eval_config(eval_config))
            validation = Validation(domain=val, mc_items=mc_items, mc_seed=mc_seed, dtype=dtype, **avoid)
        report = run_merge(base, finetuned, output, alpha=alpha, grid=grid, validation=validation,
                           overwrite=overwrite, log=lambda line: click.echo(line, err=True))
    except (DistillError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(json.dumps(report, indent=2))


def _register_commands() -> None:
    from raft_distill.config_cli import config_cmd
    from raft_distill.eval_cli import eval_cmd
    from raft_distill.replicate_cli import replicate_cmd

    main.add_command(eval_cmd, name="eval")
    main.add_command(replicate_cmd, name="replicate")
    main.add_command(config_cmd, name="config")


_register_commands()

if __name__ == "__main__":
    main()

"""`raft-distill config`: every key of the fit, eval or replicate config, with its type,
default and meaning, read off the Pydantic models (`schemas.config_reference`).

`config_cmd` is a click command; the `raft-distill` group registers it as `config`.
"""

from __future__ import annotations

from typing import Literal

import click
from pydantic import BaseModel

Kind = Literal["fit", "eval", "replicate"]


def config_model(kind: Kind) -> tuple[type[BaseModel], str]:
    """The model of a command's YAML config and a title naming it."""
    if kind == "eval":
        from raft_distill.evaluate.config import EvalConfig

        return EvalConfig, "raft-distill eval config (raft_distill.evaluate.config.EvalConfig)"
    if kind == "replicate":
        from raft_distill.replicate.config import ReplicateConfig

        return ReplicateConfig, "raft-distill replicate config (raft_distill.replicate.config.ReplicateConfig)"
    from raft_distill.config import FitConfig

    return FitConfig, "raft-distill fit config (raft_distill.config.FitConfig)"


@click.command("config")
@click.argument("search", required=False)
@click.option(
    "--kind",
    type=click.Choice(["fit", "eval", "replicate"]),
    default="fit",
    show_default=True,
    help="which command's config",
)
@click.option("--yaml", "as_yaml", is_flag=True, help="print a full YAML file, every key at its default, commented")
def config_cmd(search: str | None, kind: Kind, as_yaml: bool) -> None:
    """Every config key with its type, default and meaning (SEARCH: only keys containing it)."""
    from schemas.config_reference import format_reference, format_yaml

    model, title = config_model(kind)
    text = format_yaml(model, title) if as_yaml else format_reference(model, title, search)
    click.echo(text, nl=False)

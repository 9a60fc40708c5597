"""`raft-data`: thin commands over the stage-1 recipe."""

from __future__ import annotations

import sys

import click

from raft_data.errors import RaftDataError
from schemas.errors import SchemaError


@click.group()
@click.version_option(package_name="raft-toolkit")
def main() -> None:
    """RAFT stage 1: refine a domain Q&A set into answers the model can learn from."""


@main.command("build")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config key, e.g. --set input.limit=20")
@click.option("--overwrite", is_flag=True, help="replace an output folder built from another config")
def build_cmd(pipeline: str, overrides: tuple[str, ...], overwrite: bool) -> None:
    """Build the refined dataset described by PIPELINE (a YAML file in pipelines/)."""
    from raft_data.build import build
    from raft_data.config import load_config
    from raft_data.summary import format_summary

    try:
        cfg = load_config(pipeline, list(overrides))
        result = build(cfg, overwrite=overwrite)
    except (RaftDataError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    finally:
        from raft_data.backends import close_backends

        close_backends()
    assert result.manifest is not None
    click.echo(format_summary(result.manifest, result.folder, result.shards_done, result.shards_skipped))


if __name__ == "__main__":
    main()

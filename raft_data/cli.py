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
@click.option(
    "--worker", default=None, metavar="I/N",
    help="build only shards with index % N == I (0 <= I < N), e.g. --worker $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
)
def build_cmd(pipeline: str, overrides: tuple[str, ...], overwrite: bool, worker: str | None) -> None:
    """Build the refined dataset described by PIPELINE (a YAML file in pipelines/).

    With --worker I/N, N copies share one build (one per GPU, or a job array): each builds
    its own shards, and the one that finds every shard done writes the manifest and card
    (so does a plain rerun).

    Decisions (engine, dtype, shards redone and why, fallbacks by reason) are logged on
    stderr and, with details, in OUTPUT/.raft/logs/build-<time>.log.
    """
    from raft_data.build import build
    from raft_data.config import load_config
    from raft_data.log import log_to_stderr
    from raft_data.summary import format_summary

    log_to_stderr()  # INFO here; DEBUG too in the build's own file, OUTPUT/.raft/logs/
    try:
        cfg = load_config(pipeline, list(overrides))
        result = build(cfg, overwrite=overwrite, worker=parse_worker(worker) if worker else None)
    except (RaftDataError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    finally:
        from raft_data.backends import close_backends

        close_backends()
    if result.manifest is None:
        click.echo(
            f"worker {worker}: {result.shards_done} shard(s) built, {result.shards_skipped} reused; other "
            "workers' shards still pending (the last worker, or a plain rerun, writes the manifest)"
        )
        return
    click.echo(format_summary(result.manifest, result.folder, result.shards_done, result.shards_skipped))


def parse_worker(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 0 <= I < N."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise RaftDataError(f"--worker {text!r}: expected I/N with integers, e.g. 0/4") from None
    if not 0 <= i < n:
        raise RaftDataError(f"--worker {text!r}: need 0 <= I < N")
    return i, n


@main.command("config")
@click.argument("search", required=False)
@click.option("--yaml", "as_yaml", is_flag=True, help="print a full pipeline YAML, every key at its default, commented")
def config_cmd(search: str | None, as_yaml: bool) -> None:
    """Every `build` config key with its type, default and meaning (SEARCH: only keys containing it)."""
    from raft_data.config import PipelineConfig
    from schemas.config_reference import format_reference, format_yaml

    title = "raft-data build pipeline config (raft_data.config.PipelineConfig)"
    text = format_yaml(PipelineConfig, title) if as_yaml else format_reference(PipelineConfig, title, search)
    click.echo(text, nl=False)


@main.command("push")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.argument("repo_id")
@click.option("--private", is_flag=True, default=None, help="create the dataset repo as private")
@click.option("--revision", default=None, metavar="BRANCH", help="push to this branch (created from main if missing)")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN, then the `hf auth login` token)")
@click.option("--commit-message", default=None, help="commit summary; schema, config hash and rows are appended")
@click.option("--max-commit-files", default=100, show_default=True, type=click.IntRange(min=1), help="split larger pushes into commits of this many files")
@click.option("--max-commit-gb", default=4.0, show_default=True, type=click.FloatRange(min=0.001), help="split larger pushes into commits of this many GB")
def push_cmd(
    output_dir: str,
    repo_id: str,
    private: bool | None,
    revision: str | None,
    token: str | None,
    commit_message: str | None,
    max_commit_files: int,
    max_commit_gb: float,
) -> None:
    """Check OUTPUT_DIR (a `build` output) and make Hub dataset REPO_ID match it.

    Nothing is sent for a folder that fails the checks; `.raft/` is never uploaded; an
    unchanged folder makes no commit.
    """
    from raft_data.hub import PushOptions, format_push, hub_endpoint, push

    options = PushOptions(
        private=private,
        revision=revision,
        commit_message=commit_message,
        max_commit_files=max_commit_files,
        max_commit_bytes=int(max_commit_gb * 1024**3),
    )
    try:
        result = push(output_dir, repo_id, token=token, options=options, log=lambda m: click.echo(m, err=True))
    except (RaftDataError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(format_push(result, hub_endpoint()))


@main.command("inspect")
@click.argument("dataset")
@click.option("--rows", default=3, show_default=True, type=click.IntRange(min=0), help="rows to show side by side")
@click.option("--revision", default=None, help="branch, tag or commit when DATASET is a Hub id")
@click.option("--width", default=None, type=click.IntRange(min=40), help="output width (default: the terminal's)")
def inspect_cmd(dataset: str, rows: int, revision: str | None, width: int | None) -> None:
    """Summarize a built dataset: DATASET is an output folder or a Hub id (org/name)."""
    import shutil

    from raft_data.inspect_view import inspect_dataset
    from schemas.hub_dataset import resolve_dataset

    try:
        folder = resolve_dataset(dataset, revision)
        text = inspect_dataset(folder, rows=rows, width=width or shutil.get_terminal_size((100, 24)).columns)
    except (RaftDataError, SchemaError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(text)


if __name__ == "__main__":
    main()

"""Test-only SIGKILL points for the kill -9 / rerun tests (tests/*/test_kill_resume.py).

Runs a CLI with its stage functions wrapped, so a test can kill it at an exact point
rather than by wall-clock luck; no production code knows about it:

    python tests/killpoints.py raft_data build pipeline.yaml
    python tests/killpoints.py raft_distill fit config.yaml [--resume]

Environment:
- RAFT_TEST_KILL_STATE: a JSON file of call counts per stage, summed over every run that
  shares it (a killed run and its reruns). Each time a stage point is reached its count goes
  up by one and is saved before anything else happens.
- RAFT_TEST_KILL_AT: "stage:n,stage:n,...": the process SIGKILLs itself at the first point
  where a stage's summed count reaches its n. A spec fires once; the next run in the chain
  goes on to the next one. So a chain of len(specs) + 1 runs kills once per spec and then
  finishes.

Stage points (the point is reached when the named thing starts unless said otherwise):
- raft_data: rewrite / fuse / judge (each model batch of that stage), filter (each
  check_pairs call), measure (each NLL batch), shard (a shard's Parquet bytes are in its
  temp file, before the rename), finish (writing the manifest, then the card).
- raft_distill: rollout, teacher (scoring a micro-batch), backward (each backward call),
  optimizer (each step), metrics (a step is computed, its metrics line not yet written),
  checkpoint (a checkpoint save starts: metrics of that step already written), save_model
  (mid-checkpoint: training state saved, model and trainer_state.json not), final (copying
  the last checkpoint's model to final/).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_ENV = "RAFT_TEST_KILL_STATE"
KILL_ENV = "RAFT_TEST_KILL_AT"

BUILD_STAGES = ("rewrite", "filter", "fuse", "judge", "measure", "shard", "finish")
FIT_STAGES = (
    "rollout", "teacher", "backward", "optimizer", "metrics", "checkpoint", "save_model", "final",
)


def parse_specs(text: str) -> list[tuple[str, int]]:
    specs = []
    for part in filter(None, text.split(",")):
        stage, n = part.rsplit(":", 1)
        specs.append((stage, int(n)))
    return specs


def kill_point(stage: str) -> None:
    """Count one arrival at `stage`; SIGKILL this process if a pending spec is due."""
    path = os.environ.get(STATE_ENV)
    if not path:
        return
    state_file = Path(path)
    state: dict[str, Any] = {"counts": {}, "fired": []}
    if state_file.exists():
        state = json.loads(state_file.read_text())
    state["counts"][stage] = state["counts"].get(stage, 0) + 1
    due = None
    for i, (name, n) in enumerate(parse_specs(os.environ.get(KILL_ENV, ""))):
        if name == stage and i not in state["fired"] and state["counts"][stage] >= n:
            due = i
            state["fired"].append(i)
            state["killed_at"] = f"{stage}:{state['counts'][stage]}"
            break
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_file)
    if due is not None:
        os.kill(os.getpid(), signal.SIGKILL)


def _before(owner: Any, name: str, stage: str | Callable[..., str]) -> None:
    real = getattr(owner, name)  # AttributeError when the code moved: fix this map

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kill_point(stage(*args, **kwargs) if callable(stage) else stage)
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def _after(owner: Any, name: str, stage: str) -> None:
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        kill_point(stage)
        return out

    setattr(owner, name, wrapper)


def install_build() -> None:
    import pyarrow.parquet as pq

    from raft_data import backends, build, fuse, measure, refine, rewrite

    current = {"stage": "rewrite"}

    def staged(owner: Any, name: str, kind_at: int | None, fixed: str | None = None) -> None:
        real = getattr(owner, name)

        @functools.wraps(real)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            current["stage"] = fixed or (args[kind_at] if kind_at is not None else kwargs["kind"])
            return real(*args, **kwargs)

        setattr(owner, name, wrapper)

    staged(rewrite, "generate_cached", 2)  # (backend, cache, kind, ...)
    staged(fuse, "generate_cached", 2)  # kind "fuse" or "judge"
    staged(measure, "nll_cached", None, "measure")
    _before(backends.TransformersBackend, "generate", lambda *a, **k: current["stage"])
    _before(backends.TransformersBackend, "answer_nll", "measure")
    _before(refine, "check_pairs", "filter")
    _before(build, "write_manifest", "finish")
    _before(build, "write_card", "finish")
    real_write = pq.write_table

    @functools.wraps(real_write)
    def write_table(table: Any, where: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_write(table, where, *args, **kwargs)
        if Path(str(where)).name.startswith(".train-"):  # a shard's temp file, not yet renamed
            kill_point("shard")
        return out

    pq.write_table = write_table


def install_fit() -> None:
    import shutil

    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from raft_distill import rollout, teacher, train

    _before(rollout, "sample_trajectories", "rollout")
    _before(teacher, "score", "teacher")
    _before(Accelerator, "backward", "backward")
    _before(AcceleratedOptimizer, "step", "optimizer")
    _after(train.Trainer, "train_step", "metrics")
    _before(train.Trainer, "save_checkpoint", "checkpoint")
    _before(train.Trainer, "save_model", "save_model")
    _before(shutil, "copytree", "final")  # only train.py copies trees in a fit run


def main() -> None:
    package, args = sys.argv[1], sys.argv[2:]
    if package == "raft_data":
        install_build()
        from raft_data.cli import main as cli
    elif package == "raft_distill":
        install_fit()
        from raft_distill.cli import main as cli
    else:
        raise SystemExit(f"unknown package {package!r}")
    cli(args=args, prog_name=package)


if __name__ == "__main__":
    main()

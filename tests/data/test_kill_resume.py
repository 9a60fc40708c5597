"""kill -9 inside every stage of `raft-data build`, rerun, compare with an uninterrupted build.

The CLI runs under tests/killpoints.py, which SIGKILLs it at an exact stage point (model
batch of rewrite, fuse, judge or measure; a filter call; a shard written to its temp file
but not renamed; the manifest and card writes). One point per stage is drawn with a seeded
RNG from the calls an uninterrupted build makes; the points fire one per run over a chain
of reruns in the same output folder, and the last rerun finishes. Every file of the result
must equal the uninterrupted build's, apart from timings and the creation time.
RAFT_KILL_SEED=<n> draws other points (for hunting by hand; the default is fixed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import yaml

from tests.data.build_compare import assert_same_build
from tests.forkrun import run_killpoints
from tests.killpoints import BUILD_STAGES, KILL_ENV, STATE_ENV

REPO = Path(__file__).resolve().parents[2]

SEED = int(os.environ.get("RAFT_KILL_SEED", "14"))
ROWS = [
    {"question": f"What is the atomic number of element {i}?", "answer": f"Atomic number {i}." + " Yes." * (i % 3)}
    for i in range(1, 7)
]


def write_config(tmp_path: Path, model: Path, run_dir: str) -> Path:
    """The same pipeline file in its own folder; output.dir is relative ("out"), so both
    builds have one config hash and their outputs can be compared file by file."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps(r) for r in ROWS] + ['{"question": "bad"}', "not json"]) + "\n")
    data = {
        "name": "kill",
        "input": {"path": str(src), "domain": "chem"},
        "output": {"dir": "out", "shard_size": 3},
        "model": str(model),
        # batches of 2 over prompts of different lengths: a resumed stage must cut the same batches
        "backend": {"engine": "transformers", "batch_size": 2},
        "rewrite": {"sampling": {"max_new_tokens": 10, "temperature": 0.8, "seed": 1}},
        "filter": {  # accept every random rewrite so that fusion and judging run too
            "tau": -1.0, "check_facts": False, "check_answer": False, "reject_truncated": False,
            "copy_threshold": 100, "repetition_threshold": 1.0,
        },
        "fusion": {"rounds": 2, "sampling": {"max_new_tokens": 8}, "judge_sampling": {"max_new_tokens": 4}},
        "teacher_context": {"max_tokens": 120, "trajectory_tokens": 16},
    }
    path = tmp_path / run_dir / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def run(cfg: Path, state: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", STATE_ENV: str(state), KILL_ENV: kill_at}
    return run_killpoints(["raft_data", "build", cfg.name], cfg.parent, env, timeout=300)


def test_kill_9_in_every_build_stage_then_rerun_equals_uninterrupted(tmp_path: Path, tiny_model_dir: Path) -> None:
    whole_state = tmp_path / "whole.json"
    whole = run(write_config(tmp_path, tiny_model_dir, "whole"), whole_state)
    assert whole.returncode == 0, whole.stderr[-3000:]
    counts = json.loads(whole_state.read_text())["counts"]
    assert set(counts) == set(BUILD_STAGES), counts  # every stage point is reached

    rng = random.Random(SEED)
    specs = [(stage, rng.randint(1, counts[stage])) for stage in BUILD_STAGES]
    kill_at = ",".join(f"{s}:{n}" for s, n in specs)
    cfg, state = write_config(tmp_path, tiny_model_dir, "killed"), tmp_path / "killed.json"
    killed_at = []
    for _ in specs:
        proc = run(cfg, state, kill_at)
        assert proc.returncode == -signal.SIGKILL, f"{kill_at}: not killed\n{proc.stderr[-3000:]}"
        killed_at.append(json.loads(state.read_text())["killed_at"])
    final = run(cfg, state, kill_at)
    assert final.returncode == 0, f"{kill_at} (killed at {killed_at}):\n{final.stderr[-3000:]}"
    assert_same_build(tmp_path / "killed" / "out", tmp_path / "whole" / "out")

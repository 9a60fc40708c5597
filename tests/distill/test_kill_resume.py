"""kill -9 inside every stage of `raft-distill fit`, rerun, compare with an uninterrupted run.

The CLI runs under tests/killpoints.py, which SIGKILLs it at an exact stage point (rollout,
teacher scoring, backward, optimizer step, a step's metrics not yet written, a checkpoint
save starting, mid-checkpoint, the copy to final/). One point per stage is drawn with a
seeded RNG from the calls an uninterrupted run makes; the points fire one per run over a
chain of reruns in the same output folder (`--resume` once a complete checkpoint exists, as
a user would), and the last rerun finishes. Final weights must be bit-identical, and the
metrics, summary, plots and checkpoints equal apart from timings and memory.
RAFT_KILL_SEED=<n> draws other points (for hunting by hand; the default is fixed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from raft_distill.train import latest_checkpoint
from tests.distill.helpers import tiny_config
from tests.forkrun import run_killpoints
from tests.killpoints import FIT_STAGES, KILL_ENV, STATE_ENV

REPO = Path(__file__).resolve().parents[2]

SEED = int(os.environ.get("RAFT_KILL_SEED", "14"))
# wall-clock, throughput and memory: they differ between any two runs
VOLATILE = {"tokens_per_s", "step_s", "rollout_s", "teacher_s", "student_s", "optimizer_s", "peak_memory_mb"}


def write_config(tmp_path: Path, student: Path, teacher: Path, data: Path, out: str) -> Path:
    raw = tiny_config(
        student,
        data,
        tmp_path / out,
        model={"teacher": str(teacher)},  # another random model: the KL is far from 0
        data={"eval_fraction": 0.25},
        train={
            "max_steps": 4,
            "checkpoint_every": 2,  # steps 3-4 run past the last checkpoint: redone on resume
            "eval_every": 2,
            "gradient_accumulation_steps": 2,
            "lr_scheduler": "linear",
            "warmup_steps": 1,
        },
    )
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(cfg: Path, out: Path, state: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", STATE_ENV: str(state), KILL_ENV: kill_at}
    resume = ["--resume"] if latest_checkpoint(out) is not None else []
    return run_killpoints(["raft_distill", "fit", str(cfg), *resume], REPO, env, timeout=300)


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    for key in ("peak_memory_mb", "resumed_from", "final_model"):
        s.pop(key)
    return s


def assert_same_model(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()), a
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{a}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    for name in names:
        if name != "model.safetensors":
            assert (a / name).read_bytes() == (b / name).read_bytes(), a / name


def assert_same_run(got: Path, want: Path) -> None:
    assert metrics(got) == metrics(want)
    assert summary(got) == summary(want)
    configs = [yaml.safe_load((out / "config.yaml").read_text()) for out in (got, want)]
    configs[0]["train"]["output_dir"] = configs[1]["train"]["output_dir"]
    assert configs[0] == configs[1]
    for name in ("losses.png", "lambda_ratio.png"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    assert_same_model(got / "final", want / "final")
    ckpts = sorted(p.name for p in (want / "checkpoints").iterdir())
    assert sorted(p.name for p in (got / "checkpoints").iterdir()) == ckpts
    for name in ckpts:  # state/ holds Python's RNG state, seeded by the OS: not compared
        a, b = got / "checkpoints" / name, want / "checkpoints" / name
        assert (a / "trainer_state.json").read_text() == (b / "trainer_state.json").read_text()
        assert_same_model(a / "model", b / "model")


def test_kill_9_in_every_fit_stage_then_rerun_equals_uninterrupted(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, tiny_dataset: Path
) -> None:
    whole, whole_state = tmp_path / "whole", tmp_path / "whole.json"
    done = run(write_config(tmp_path, tiny_model_dir, tiny_teacher_dir, tiny_dataset, "whole"), whole, whole_state)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(whole_state.read_text())["counts"]
    assert set(counts) == set(FIT_STAGES), counts  # every stage point is reached

    rng = random.Random(SEED)
    specs = [(stage, rng.randint(1, counts[stage])) for stage in FIT_STAGES]
    kill_at = ",".join(f"{s}:{n}" for s, n in specs)
    killed, state = tmp_path / "killed", tmp_path / "killed.json"
    cfg = write_config(tmp_path, tiny_model_dir, tiny_teacher_dir, tiny_dataset, "killed")
    killed_at = []
    for _ in specs:
        proc = run(cfg, killed, state, kill_at)
        assert proc.returncode == -signal.SIGKILL, f"{kill_at}: not killed\n{proc.stderr[-3000:]}"
        killed_at.append(json.loads(state.read_text())["killed_at"])
    final = run(cfg, killed, state, kill_at)
    assert final.returncode == 0, f"{kill_at} (killed at {killed_at}):\n{final.stderr[-3000:]}"
    assert_same_run(killed, whole)

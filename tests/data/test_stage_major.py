"""Stage-major builds: with several models, each is loaded once per pass over all pending
shards and closed before the next opens; the output equals a build that takes one shard at
a time through every model (shard-major), and a fresh build counts no call as cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_data import backends
from raft_data.build import build
from raft_data.config import PipelineConfig
from tests.data.build_compare import assert_same_build

ROWS = [{"question": f"What is the atomic number of element {i}?", "answer": f"Atomic number {i}."} for i in range(1, 6)]


def config(tmp_path: Path, student: Path, teacher: Path) -> PipelineConfig:
    src = tmp_path / "in.jsonl"
    if not src.exists():
        src.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return PipelineConfig.model_validate({
        "name": "stages",
        "input": {"path": str(src), "domain": "chem"},
        "output": {"dir": "out", "shard_size": 2},  # 3 shards
        "model": str(student),
        "backend": {"engine": "transformers", "batch_size": 2},
        "rewrite": {"sampling": {"max_new_tokens": 8, "temperature": 0.8, "seed": 1}},
        "filter": {
            "tau": -1.0, "check_facts": False, "check_answer": False, "reject_truncated": False,
            "copy_threshold": 100, "repetition_threshold": 1.0,
        },
        # another model fuses and judges; two rounds: fusion, judge, fusion, judge
        "fusion": {"model": str(teacher), "judges": [str(teacher)], "rounds": 2, "stop_score": 1.0,
                   "sampling": {"max_new_tokens": 6}, "judge_sampling": {"max_new_tokens": 4}},
        "teacher_context": {"max_tokens": 120, "trajectory_tokens": 16},
    })


def test_one_model_resident_and_same_output_as_shard_major(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends.close_backends()
    opened: list[tuple[str, int]] = []
    real_init = backends.TransformersBackend.__init__

    def spy(self: backends.TransformersBackend, model, cfg, role="backend") -> None:  # type: ignore[no-untyped-def]
        opened.append((Path(model.path).name, len(backends._OPEN)))
        real_init(self, model, cfg, role)

    monkeypatch.setattr(backends.TransformersBackend, "__init__", spy)
    (tmp_path / "stage").mkdir()
    monkeypatch.chdir(tmp_path / "stage")
    result = build(config(tmp_path, tiny_model_dir, tiny_teacher_dir))
    m = result.manifest
    assert m is not None and result.shards_done == 3
    # original (rewrite), teacher (every fusion round and judge), original again (measure)
    assert [name for name, _ in opened] == [tiny_model_dir.name, tiny_teacher_dir.name, tiny_model_dir.name]
    assert all(resident == 0 for _, resident in opened)  # the previous engine was closed first
    for stage in ("rewrite", "fuse", "judge", "measure"):
        assert m.timings[stage].cached == 0 and m.timings[stage].requests > 0, (stage, m.timings[stage])
    assert m.timings["rewrite"].generated_tokens > 0 and m.timings["fuse"].generated_tokens > 0

    backends.close_backends()
    (tmp_path / "shard").mkdir()
    monkeypatch.chdir(tmp_path / "shard")
    cfg = config(tmp_path, tiny_model_dir, tiny_teacher_dir)
    while (step := build(cfg, max_shards=1)).manifest is None:  # one shard through every model at a time
        assert step.shards_done == 1
    assert_same_build(tmp_path / "shard" / "out", tmp_path / "stage" / "out")
    backends.close_backends()


def test_kill_9_in_each_pass_then_rerun_equals_uninterrupted(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path
) -> None:
    """SIGKILL at stage points of a two-model build (tests/killpoints.py), rerun until done:
    the files equal an uninterrupted build's."""
    import random
    import signal
    import subprocess

    import yaml

    from tests.forkrun import run_killpoints
    from tests.killpoints import KILL_ENV, STATE_ENV

    def write(run_dir: str) -> Path:
        (tmp_path / run_dir).mkdir()
        data = config(tmp_path, tiny_model_dir, tiny_teacher_dir).model_dump(mode="json")
        path = tmp_path / run_dir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def run(cfg: Path, state: Path, kill_at: str = "") -> subprocess.CompletedProcess:
        env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               STATE_ENV: str(state), KILL_ENV: kill_at}
        return run_killpoints(["raft_data", "build", cfg.name], cfg.parent, env, timeout=600)

    whole_state = tmp_path / "whole.json"
    whole = run(write("whole"), whole_state)
    assert whole.returncode == 0, whole.stderr[-3000:]
    counts = json.loads(whole_state.read_text())["counts"]
    rng = random.Random(3)
    stages = ("rewrite", "fuse", "judge", "measure", "shard")  # one kill in each pass
    kill_at = ",".join(f"{s}:{rng.randint(1, counts[s])}" for s in stages)
    cfg, state = write("killed"), tmp_path / "killed.json"
    for _ in stages:
        proc = run(cfg, state, kill_at)
        assert proc.returncode == -signal.SIGKILL, f"{kill_at}: not killed\n{proc.stderr[-3000:]}"
    final = run(cfg, state, kill_at)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_build(tmp_path / "killed" / "out", tmp_path / "whole" / "out")

"""`raft-data build --worker I/N`: N processes share one build over disjoint shards.

Two workers started together must give the output of one process (apart from timings and
the creation time); a worker stopped midway and rerun finishes its shards from the call
cache without redoing finished requests; a worker alone never writes a manifest early.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raft_data.build import build
from raft_data.cli import parse_worker
from raft_data.config import load_config
from raft_data.errors import RaftDataError
from tests.data.build_compare import assert_same_build

ROWS = [{"question": f"What is the atomic number of element {i}?", "answer": f"Atomic number {i}."} for i in range(1, 8)]


def write_config(tmp_path: Path, model: Path, run_dir: str) -> Path:
    """One pipeline file per run folder; output.dir is relative, so the config hashes agree."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    data = {
        "name": "workers",
        "input": {"path": str(src), "domain": "chem"},
        "output": {"dir": "out", "shard_size": 2},  # 4 shards
        "model": str(model),
        "backend": {"engine": "transformers", "batch_size": 2},
        "rewrite": {"sampling": {"max_new_tokens": 8, "temperature": 0.8, "seed": 1}},
        "filter": {
            "tau": -1.0, "check_facts": False, "check_answer": False, "reject_truncated": False,
            "copy_threshold": 100, "repetition_threshold": 1.0,
        },
        "fusion": {"rounds": 1, "sampling": {"max_new_tokens": 6}, "judge_sampling": {"max_new_tokens": 4}},
        "teacher_context": {"max_tokens": 120, "trajectory_tokens": 16},
    }
    path = tmp_path / run_dir / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def cli(cfg: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "raft_data.cli", "build", cfg.name, *args],
        cwd=cfg.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_workers_equal_one_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    one = cli(write_config(tmp_path, tiny_model_dir, "one"))
    assert one.wait(timeout=600) == 0, one.stderr.read()[-3000:] if one.stderr else ""
    cfg = write_config(tmp_path, tiny_model_dir, "two")
    workers = [cli(cfg, "--worker", f"{i}/2") for i in range(2)]
    outs = [(w.wait(timeout=600), *w.communicate()) for w in workers]
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    assert sum("raft-data build 'workers'" in out for _, out, _ in outs) >= 1  # someone finalized
    assert_same_build(cfg.parent / "out", tmp_path / "one" / "out")


def test_a_stopped_worker_reruns_only_what_is_missing(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_path = write_config(tmp_path, tiny_model_dir, "w")
    monkeypatch.chdir(cfg_path.parent)
    cfg = load_config(cfg_path)
    first = build(cfg, worker=(0, 2), max_shards=1)  # stops after one of its two shards
    assert first.manifest is None and first.shards_done == 1
    again = build(cfg, worker=(0, 2))  # its other shard; worker 1's are still missing
    assert again.manifest is None and (again.shards_done, again.shards_skipped) == (1, 1)
    other = build(cfg, worker=(1, 2))  # the last worker writes the manifest
    assert other.manifest is not None and other.shards_done == 2
    m = other.manifest
    assert m.counts.rows_in == 7 and m.counts.accepted + m.counts.fallback == 7
    # a plain rerun reuses every shard and redoes no model call
    final = build(cfg)
    assert final.shards_done == 0 and final.shards_skipped == 4 and final.manifest is not None


def test_worker_argument() -> None:
    assert parse_worker("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(RaftDataError, match="--worker"):
            parse_worker(bad)


def _open_cache_at_once(path: str, barrier: object) -> None:
    from raft_data.cache import CallCache

    barrier.wait()  # type: ignore[attr-defined]
    cache = CallCache(path)
    cache.put_many({f"k{os.getpid()}": 1})
    cache.close()


def test_workers_opening_a_new_call_cache_together_do_not_fail(tmp_path: Path) -> None:
    """N workers started at once all create/open the same SQLite cache; switching it to WAL
    needs an exclusive lock, so without a retry some of them died with 'database is locked'
    (seen with 2 workers in benchmarks/build_scale.py)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(30):  # two at a time collide most: ~1 in 4 failed before the retry
        path = str(tmp_path / f"c{attempt}" / "calls.sqlite")
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_open_cache_at_once, args=(path, barrier)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0], f"attempt {attempt}"
        from raft_data.cache import CallCache

        assert len(CallCache(path)) == 2

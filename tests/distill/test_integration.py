"""Two real steps on the embedded SmolLM2-135M-Instruct (K = 512, T = 1.5, raft mode)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from raft_distill.config import config_from_dict
from raft_distill.train import fit
from tests.distill.helpers import QA, make_record, write_dataset


@pytest.mark.integration
def test_two_real_steps_on_smollm2(tmp_path: Path):
    data = write_dataset(tmp_path / "fused", [make_record(q, a) for q, a in QA[:4]])
    out = tmp_path / "run"
    raw = {
        "data": {"path": str(data)},
        "model": {"student": "smollm2-135m-instruct"},
        "rollout": {"max_new_tokens": 16, "temperature": 1.0},
        "loss": {"mode": "raft", "top_k": 512, "temperature": 1.5},
        "train": {
            "batch_size": 2,
            "max_steps": 2,
            "lr": 5e-6,
            "bf16": True,
            "output_dir": str(out),
            "progress": False,
        },
    }
    result = fit(config_from_dict(raw))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        for key in ("loss_sft", "loss_kl", "lambda", "topk_mass"):
            assert r[key] is not None and math.isfinite(r[key]), key
        assert r["loss_kl"] >= 0 and r["lambda"] > 0
        assert 0.5 < r["topk_mass"] <= 1.0 + 1e-6
    assert (out / "losses.png").exists() and (out / "lambda_ratio.png").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.final_model)
    tok = AutoTokenizer.from_pretrained(result.final_model)
    ids = tok("The capital of France is", return_tensors="pt")
    out_ids = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out_ids.shape[1] > ids["input_ids"].shape[1]

"""Fixtures: a tiny fused dataset and replicate/fit/eval YAML files for the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import RefinedRecord, row_id, write_records

ROOT = Path(__file__).resolve().parents[2]
QA = [
    ("What is the capital of France?", "Paris is the capital of France.", "Paris."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Eight."),
    ("What is 2 + 3?", "2 + 3 equals 5.", "5"),
    ("What do bees make?", "Bees make honey.", "Honey."),
]


@pytest.fixture()
def replicate_files(tmp_path: Path, tiny_model_dir: Path) -> dict[str, Any]:
    """fit.yaml (tiny model, 1 step), eval.yaml (2 items per suite), replicate.yaml."""
    records = [
        RefinedRecord(
            id=row_id("general", q, gold),
            question=q,
            gold_answer=gold,
            domain="general",
            source_file="qa.jsonl",
            source_row=i,
            decision="accepted",
            reason="passed",
            final_answer=fused,
            final_source="fusion",
            teacher_context_tokens=40,
            over_length=False,
        )
        for i, (q, fused, gold) in enumerate(QA)
    ]
    data = tmp_path / "fused"
    write_records(data / "data" / "train-00000.parquet", records, RefinedRecord)
    fit = {
        "data": {"path": str(data)},
        "model": {"student": str(tiny_model_dir)},
        "rollout": {"max_new_tokens": 4},
        "loss": {"top_k": 16, "logit_chunk_size": 32},
        "train": {
            "lr": 1e-3,
            "batch_size": 2,
            "max_steps": 5,
            "lr_scheduler": "constant",
            "bf16": False,
            "progress": False,
        },
    }
    ev = {
        "models": [{"name": "ignored", "path": "ignored"}],
        "engine": "transformers",
        "batch_size": 2,
        "max_new_tokens": 4,
        "suites": {
            "domain": {"path": str(ROOT / "data/demo/test.jsonl"), "limit": 2},
            "ifeval": {"path": str(ROOT / "data/eval/ifeval_mini.jsonl"), "limit": 2},
            "general": {"path": str(ROOT / "data/eval/general_qa.jsonl"), "limit": 2},
        },
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    rep = {
        "fit_config": str(tmp_path / "fit.yaml"),
        "fit_overrides": {"train.max_steps": 1},
        "eval_config": str(tmp_path / "eval.yaml"),
        "eval_overrides": {"suites.general.max_new_tokens": 3},
        "seeds": [0, 1],
        "arms": ["base", "sft_raw", "raft_ema"],
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "replicate.yaml"
    path.write_text(yaml.safe_dump(rep))
    return {"path": path, "raw": rep, "out": tmp_path / "out", "tmp": tmp_path}

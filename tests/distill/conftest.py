"""Fixtures: a tiny random Llama with the SmolLM2 tokenizer, and small fused datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import RefinedRecord, row_id, write_records

QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 2 + 3?", "2 + 3 equals 5."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What do bees make?", "Bees make honey."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
]


def make_record(question: str, answer: str, **overrides: Any) -> RefinedRecord:
    fields: dict[str, Any] = dict(
        id=row_id("general", question, answer),
        question=question,
        gold_answer=answer,
        domain="general",
        source_file="qa.jsonl",
        source_row=0,
        decision="accepted",
        reason="passed",
        final_answer=answer,
        final_source="fusion",
        teacher_context_tokens=40,
        over_length=False,
    )
    fields.update(overrides)
    return RefinedRecord(**fields)


def write_dataset(folder: Path, records: list[RefinedRecord]) -> Path:
    write_records(folder / "data" / "train-00000.parquet", records, RefinedRecord)
    return folder


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "fused", [make_record(q, a) for q, a in QA])


def tiny_config(
    model_dir: Path, data_dir: Path, out_dir: Path, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A raw config dict for the tiny model: 4 sequences/step, short rollouts, K=16."""
    raw: dict[str, Any] = {
        "data": {"path": str(data_dir)},
        "model": {"student": str(model_dir)},
        "rollout": {"max_new_tokens": 8, "temperature": 1.0},
        "loss": {"mode": "raft", "top_k": 16, "temperature": 1.5, "logit_chunk_size": 32},
        "train": {
            "lr": 1e-3,
            "batch_size": 4,
            "max_steps": 2,
            "lr_scheduler": "constant",
            "bf16": False,
            "output_dir": str(out_dir),
            "progress": False,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw

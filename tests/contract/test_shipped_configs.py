"""Every YAML shipped in pipelines/ validates with the loader of the command that reads it
(torchtune's test over its recipe configs): a renamed or removed key fails here first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from raft_data.config import load_config as load_build
from raft_distill.config import load_config as load_fit
from raft_distill.evaluate.config import load_eval_config
from raft_distill.replicate.config import load_replicate_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "pipelines").glob("*.yaml"))

# A key only that command's config has at the top level -> its loader
LOADERS: dict[str, Any] = {
    "input": load_build,
    "data": load_fit,
    "models": load_eval_config,
    "fit_config": load_replicate_config,
}


def test_pipelines_folder_is_not_empty() -> None:
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path) -> None:
    top = yaml.safe_load(path.read_text())
    kinds = [key for key in LOADERS if key in top]
    assert len(kinds) == 1, f"{path.name}: cannot tell which command reads it (top-level keys {sorted(top)})"
    cfg = LOADERS[kinds[0]](path)
    if kinds[0] == "fit_config":  # the configs it names are shipped too (paths from the repo root)
        assert (ROOT / cfg.fit_config).is_file() and (ROOT / cfg.eval_config).is_file()

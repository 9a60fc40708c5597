"""CONTRIBUTING.md's module map names every module of the three packages: a reader who
looks a file up finds it, and a new module is added to the map in the same change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("raft_data", "raft_distill", "schemas")


def mapped_names(text: str) -> set[str]:
    """Every `name.py` the map mentions (backticked, alone or in a list)."""
    return set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*\.py)", text))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_map(package: str) -> None:
    named = mapped_names((REPO / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    modules = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py"
    )
    missing = [m for m in modules if Path(m).name not in named]
    assert not missing, (
        f"CONTRIBUTING.md's module map lacks {missing}: add a row saying what each holds"
    )

"""Stage-2 fixtures; the helpers they use are in tests/distill/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distill.helpers import QA, make_record, write_dataset


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "fused", [make_record(q, a) for q, a in QA])

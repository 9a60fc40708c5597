from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import SchemaError, read_manifest, write_manifest
from schemas.manifest import CompatibilityGap, Counts, Manifest, ModelInfo, StageTiming


def manifest() -> Manifest:
    return Manifest(
        tool_version="0.1.0",
        created_at="2026-11-28T00:00:00+00:00",
        pipeline_name="demo",
        pipeline_config={"name": "demo"},
        config_hash="abc",
        input_fingerprint="def",
        models={"original": ModelInfo(name="m", model_id="org/m", revision="r")},
        counts=Counts(rows_in=3, accepted=1, fallback=1, rejected=1, over_length=0, by_reason={"x": 1}),
        timings={"rewrite": StageTiming(seconds=2.0, generated_tokens=10)},
        compatibility_gap=CompatibilityGap(gold_nll_mean=2.0, final_nll_mean=1.5, rows=2),
        data_files=["data/train-00000-of-00001.parquet"],
        rejected_files=["rejected/rejected.parquet"],
    )


def test_round_trip(tmp_path: Path) -> None:
    write_manifest(tmp_path, manifest())
    assert read_manifest(tmp_path) == manifest()
    assert manifest().timings["rewrite"].tokens_per_s == 5.0


def test_missing_newer_and_broken(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no manifest"):
        read_manifest(tmp_path)
    data = manifest().model_dump(mode="json")
    data["schema_version"] = "1.5"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="1.5.*upgrade"):
        read_manifest(tmp_path)
    data["schema_version"] = "1.0"
    del data["counts"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="field 'counts'"):
        read_manifest(tmp_path)

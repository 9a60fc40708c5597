"""The dataset manifest: how a refined dataset was made, enough to reproduce and audit it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import SchemaError
from schemas.parquet_io import SCHEMA_VERSION, _parse_version, atomic_write_bytes

MANIFEST_NAME = "manifest.json"


class EngineInfo(BaseModel):
    """The engine settings a model role ran with, after defaults were resolved (a setting
    that does not apply to the engine or device is None)."""

    model_config = ConfigDict(extra="forbid")

    engine: str  # vllm, transformers or sentence-transformers
    device: str  # cuda or cpu
    dtype: str  # vLLM on GPU: "auto" is the checkpoint's own
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None
    quantization: str | None = None
    # vLLM: where its engine core runs: "in-process" (VLLM_ENABLE_V1_MULTIPROCESSING=0, the
    # CPU default here: a separate core busy-polls one of few cores) or "separate process"
    engine_core: str | None = None


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # as written in the config
    model_id: str  # Hub id (or path) to cite
    revision: str
    engine: EngineInfo | None = None  # None in manifests written before it was recorded


class StageTiming(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 0.0
    requests: int = 0
    cached: int = 0
    generated_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows_in: int
    accepted: int
    fallback: int
    rejected: int
    over_length: int
    by_reason: dict[str, int] = Field(default_factory=dict)
    # how each refined row's short answer was checked: column, derived (from gold), or
    # unchecked (no answer span could be read off gold: only the fact checks applied)
    answer_check: dict[str, int] = Field(default_factory=dict)
    # accepted rows whose kept rewrite leaves out a gold fact (flagged, not fallen back)
    omissions_flagged: int = 0
    # rows whose rewrite, or whose every fusion candidate, talked about the prompt instead
    # of answering (reason meta_text, alone or inside fusion_failed_checks); 1.2
    meta_text: int = 0


class CompatibilityGap(BaseModel):
    """Mean per-token NLL of the original model on gold vs final answers (lower = closer)."""

    model_config = ConfigDict(extra="forbid")

    gold_nll_mean: float | None
    final_nll_mean: float | None
    rows: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_name: str = "raft.refined"
    schema_version: str = SCHEMA_VERSION
    tool_version: str
    created_at: str
    pipeline_name: str
    pipeline_config: dict[str, Any]
    config_hash: str
    input_fingerprint: str
    models: dict[str, ModelInfo]
    counts: Counts
    timings: dict[str, StageTiming]
    compatibility_gap: CompatibilityGap
    data_files: list[str]
    rejected_files: list[str]


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, text.encode())
    return path


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check a dataset folder's manifest, or say what is wrong with it."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        raise SchemaError(
            f"{path}: no manifest; '{folder}' is not a finished `raft-data build` output folder"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path}: not valid JSON ({err})") from None
    version = str(data.get("schema_version", ""))
    have = _parse_version(version, str(path))
    mine = _parse_version(SCHEMA_VERSION, "this toolkit")
    if have[0] != mine[0] or have > mine:
        raise SchemaError(
            f"{path}: schema version {version} is newer than or incompatible with "
            f"{SCHEMA_VERSION}, the version this toolkit reads; upgrade raft-toolkit"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise SchemaError(f"{path}: field '{field}': {first['msg']}") from None

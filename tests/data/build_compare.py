"""Compare two `raft-data build` outputs file by file, apart from what depends on the run
(timings, the creation time). Used by the kill-resume and worker tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from schemas.parquet_io import META_EXTRA


def files(folder: Path) -> dict[str, Path]:
    """Every file of a build output but its private state (.raft/)."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] != ".raft"
    }


def shard_meta(path: Path) -> dict:
    meta = dict(pq.read_schema(path).metadata)
    extra = json.loads(meta.pop(META_EXTRA))
    extra.pop("timings")  # seconds, cached calls and generated tokens depend on the run
    return {**{k.decode(): v.decode() for k, v in meta.items()}, "extra": extra}


def manifest(path: Path) -> dict:
    m = json.loads(path.read_text())
    m.pop("created_at")
    m["timings"] = {stage: t["requests"] for stage, t in m["timings"].items() if stage != "total"}
    return m


def card(path: Path, created_at: str) -> str:
    text = path.read_text().replace(created_at, "<created_at>")
    head, rest = text.split("## Timings", 1)
    return head + rest[rest.index("## Load it"):]


def assert_same_build(got: Path, want: Path) -> None:
    a, b = files(got), files(want)
    assert list(a) == list(b), "different files (a half-written file left behind?)"
    for name in a:
        if name.startswith("data/"):
            assert pq.read_table(a[name]).equals(pq.read_table(b[name])), name
            assert shard_meta(a[name]) == shard_meta(b[name]), name
        elif name == "manifest.json":
            assert manifest(a[name]) == manifest(b[name])
        elif name == "README.md":
            created = [json.loads((f / "manifest.json").read_text())["created_at"] for f in (got, want)]
            assert card(a[name], created[0]) == card(b[name], created[1])
        else:  # rejected/rejected.parquet, the plots
            assert a[name].read_bytes() == b[name].read_bytes(), name

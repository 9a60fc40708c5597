from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import (
    RefinedRecord,
    RejectedRecord,
    SchemaError,
    check_file_schema,
    read_records,
    row_id,
    write_records,
)
from schemas.parquet_io import META_NAME, META_VERSION


def refined(i: int = 0, **kw: object) -> RefinedRecord:
    base = dict(
        id=row_id("d", f"q{i}", f"a{i}"),
        question=f"q{i}",
        gold_answer=f"a{i}",
        domain="d",
        source_file="in.jsonl",
        source_row=i,
        decision="fallback",
        reason="low_similarity: 0.1 < tau 0.80",
        final_answer=f"a{i}",
        final_source="gold",
        teacher_context_tokens=40,
        over_length=False,
    )
    base.update(kw)
    return RefinedRecord.model_validate(base)


def test_row_id_is_stable_and_content_based() -> None:
    assert row_id("d", "q", "a") == row_id("d", "q", "a")
    assert row_id("d", "q", "a") != row_id("d", "q", "b")
    assert len(row_id("d", "q", "a")) == 16


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    rows = [refined(0), refined(1, rewrite_candidates=["x", "y"], similarity=0.9, fusion_scores=[None, 0.5])]
    path = write_records(tmp_path / "data" / "s.parquet", rows, RefinedRecord, {"k": "v"})
    assert check_file_schema(path, RefinedRecord) == {"k": "v"}
    table = read_records(path, RefinedRecord)
    assert [RefinedRecord.model_validate(r) for r in table.to_pylist()] == rows
    assert list(tmp_path.glob("data/.*")) == []  # no temp file left behind


def test_empty_write_and_read(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.parquet", [], RejectedRecord)
    assert read_records(path, RejectedRecord).num_rows == 0


def _restamp(src: Path, dst: Path, **meta: bytes) -> None:
    table = pq.read_table(src)
    new = dict(table.schema.metadata)
    new.update({k.encode(): v for k, v in meta.items()})
    pq.write_table(table.replace_schema_metadata(new), dst)


def test_newer_version_is_refused_with_file_name(tmp_path: Path) -> None:
    path = write_records(tmp_path / "s.parquet", [refined()], RefinedRecord)
    newer = tmp_path / "newer.parquet"
    _restamp(path, newer, **{META_VERSION.decode(): b"1.9"})
    with pytest.raises(SchemaError, match=r"newer.parquet.*1\.9.*upgrade"):
        read_records(newer, RefinedRecord)
    major = tmp_path / "major.parquet"
    _restamp(path, major, **{META_VERSION.decode(): b"2.0"})
    with pytest.raises(SchemaError, match="major.parquet"):
        read_records(major, RefinedRecord)


def test_wrong_schema_name_and_unstamped_file(tmp_path: Path) -> None:
    path = write_records(tmp_path / "s.parquet", [refined()], RefinedRecord)
    with pytest.raises(SchemaError, match="expected 'raft.rejected'"):
        read_records(path, RejectedRecord)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"question": ["q"]}), plain)
    with pytest.raises(SchemaError, match="plain.parquet.*no RAFT schema stamp"):
        read_records(plain, RefinedRecord)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = write_records(tmp_path / "s.parquet", [refined()], RefinedRecord)
    table = pq.read_table(path)
    cut = tmp_path / "cut.parquet"
    pq.write_table(table.drop(["final_answer"]).replace_schema_metadata(table.schema.metadata), cut)
    with pytest.raises(SchemaError, match="missing column.*final_answer"):
        read_records(cut, RefinedRecord)


def test_bad_row_is_named_by_file_row_and_field(tmp_path: Path) -> None:
    path = write_records(tmp_path / "s.parquet", [refined(0), refined(1)], RefinedRecord)
    table = pq.read_table(path)
    decisions = table.column("decision").to_pylist()
    decisions[1] = "maybe"
    bad = table.set_column(table.schema.get_field_index("decision"), "decision", pa.array(decisions))
    out = tmp_path / "bad.parquet"
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), out)
    with pytest.raises(SchemaError, match=r"bad.parquet: row 1, field 'decision'"):
        read_records(out, RefinedRecord)


def test_stamp_is_in_parquet_metadata(tmp_path: Path) -> None:
    path = write_records(tmp_path / "s.parquet", [refined()], RefinedRecord)
    meta = pq.read_schema(path).metadata
    assert meta[META_NAME] == b"raft.refined"
    assert json.loads(meta[b"raft.extra"]) == {}


def test_schema_1_0_files_read_with_the_1_1_columns_at_their_defaults(tmp_path: Path) -> None:
    """1.1 added contradictions, rewrite_finish_reason, answer_check*: datasets built and
    shared before that still load, and a file lacking a required column still fails."""
    path = tmp_path / "old.parquet"
    write_records(path, [refined(0), refined(1)], RefinedRecord)
    added = ["contradictions", "rewrite_finish_reason", "answer_check", "answer_check_kind", "answer_check_source"]
    table = pq.read_table(path)
    old = table.drop_columns(added)
    meta = dict(table.schema.metadata)
    meta[META_VERSION] = b"1.0"
    pq.write_table(old.replace_schema_metadata(meta), path)
    rows = read_records(path, RefinedRecord).to_pylist()
    assert [r["contradictions"] for r in rows] == [[], []] and rows[0]["answer_check"] is None
    pq.write_table(old.drop_columns(["reason"]).replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="missing column"):
        read_records(path, RefinedRecord)

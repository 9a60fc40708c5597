"""What keeps a large build's memory flat: the finalize step reads only the columns its
summary needs."""

from __future__ import annotations

from pathlib import Path

from schemas.parquet_io import read_records, write_records
from schemas.records import RejectedRecord


def test_read_records_can_take_only_some_columns(tmp_path: Path) -> None:
    rows = [RejectedRecord(source_file="a.jsonl", source_row=i, field="answer", reason="r", raw="x" * 100) for i in range(3)]
    write_records(tmp_path / "r.parquet", rows, RejectedRecord, {})
    table = read_records([tmp_path / "r.parquet"], RejectedRecord, columns=["source_row", "reason"])
    assert table.column_names == ["source_row", "reason"]
    assert table.to_pylist() == [{"source_row": i, "reason": "r"} for i in range(3)]

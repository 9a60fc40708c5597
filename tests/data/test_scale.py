"""What keeps a large build's memory flat: JSONL input streamed shard by shard, and a
finalize step that reads only the columns its summary needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raft_data.errors import RaftDataError
from schemas.parquet_io import read_records, write_records
from schemas.records import RejectedRecord


def test_read_records_can_take_only_some_columns(tmp_path: Path) -> None:
    rows = [RejectedRecord(source_file="a.jsonl", source_row=i, field="answer", reason="r", raw="x" * 100) for i in range(3)]
    write_records(tmp_path / "r.parquet", rows, RejectedRecord, {})
    table = read_records([tmp_path / "r.parquet"], RejectedRecord, columns=["source_row", "reason"])
    assert table.column_names == ["source_row", "reason"]
    assert table.to_pylist() == [{"source_row": i, "reason": "r"} for i in range(3)]


def test_streamed_input_equals_a_whole_read(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build streams every input format (`scan_input`): the same rows, rejections and
    messages as reading them whole, and any run of shards read back from byte offsets
    (JSONL, CSV with multi-line records), row groups (Parquet) or rows of a memory-mapped
    table (`datasets` folder, Hub split)."""
    import json

    from raft_data.config import PipelineConfig
    from raft_data.load import check_lengths, load_input, scan_input

    hostile = Path(__file__).parent / "hostile"
    src = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"question": f"Q{i}?", "answer": f"A {i}."}) for i in range(9)]
    lines[3] = lines[1]  # a duplicate
    lines[5] = '{"question": "no answer"}'
    lines.insert(7, "")  # a blank line
    lines[8] = json.dumps({"question": "Long?", "answer": "word " * 5000})  # over max_model_len
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # with a BOM
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups = tmp_path / "groups.parquet"  # row groups of 2 rows: shards start inside groups
    rows = [json.loads(line) if line.startswith("{") else {"question": line} for line in lines if line]
    pq.write_table(pa.Table.from_pylist([{"question": r.get("question"), "answer": r.get("answer")} for r in rows]),
                   groups, row_group_size=2)
    assert pq.ParquetFile(groups).num_row_groups > 3
    import csv

    import datasets

    import raft_data.readers

    quoted = tmp_path / "multiline.csv"  # records over several lines: offsets are record starts
    with quoted.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        for r in rows:
            answer = r.get("answer")
            writer.writerow([r.get("question"), None if answer is None else f"{answer[:40]}\nsecond line, \"quoted\""])
    folder = tmp_path / "saved"  # a `datasets` folder: a memory-mapped table read in batches
    datasets.Dataset.from_parquet(str(groups)).save_to_disk(str(folder))
    hub_like = tmp_path / "hub_like"  # what load_dataset gives for a Hub id, here from local files
    hub_like.mkdir()
    pq.write_table(pq.read_table(groups), hub_like / "train.parquet")
    monkeypatch.setattr(raft_data.readers, "TABLE_BATCH", 2)
    inputs: list[tuple[Path, dict[str, str]]] = [
        (p, {}) for p in [src, groups, quoted, folder, *sorted(hostile.glob("*.jsonl")),
                          *sorted(hostile.glob("*.parquet")), *sorted(hostile.glob("*.csv"))]
    ]
    inputs.append((hub_like, {"format": "hub"}))
    for path, extra in inputs:
        cfg = PipelineConfig.model_validate({
            "name": "s", "input": {"path": str(path), **extra}, "output": {"dir": "o"}, "model": str(tiny_model_dir),
        })
        try:
            whole = check_lengths(load_input(cfg.input), cfg)
        except RaftDataError as err:  # empty.jsonl, not_parquet.parquet
            with pytest.raises(RaftDataError, match=re.escape(str(err))):
                scan_input(cfg)
            continue
        streamed = scan_input(cfg)
        assert streamed.records == [] and streamed.count == len(whole.records), path
        assert streamed.rejected == whole.rejected and streamed.rows_in == whole.rows_in, path
        assert streamed.fingerprint == whole.fingerprint
        assert streamed.chunk(0, streamed.count) == whole.records, path
        for size in (1, 2, 3):
            shards = [streamed.chunk(i, i + size) for i in range(0, streamed.count, size)]
            assert [r for shard in shards for r in shard] == whole.records, (path, size)
    reasons = {r.source_row: r.reason for r in scan_input(PipelineConfig.model_validate({
        "name": "s", "input": {"path": str(src)}, "output": {"dir": "o"}, "model": str(tiny_model_dir),
    })).rejected}
    assert sorted(reasons) == [3, 5, 7] and reasons[7].startswith("over_model_length"), reasons

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raft_data.config import InputConfig
from raft_data.errors import RaftDataError
from raft_data.load import load_input

GOOD = [
    {"q": "What is 2+2?", "a": "4", "src": "x"},
    {"q": "Symbol of iron?", "a": "Fe", "src": "y"},
]


def test_jsonl_bad_rows_are_quarantined_with_file_row_field(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(GOOD[0]), "{broken", json.dumps({"q": "", "a": "x"}), json.dumps({"q": "no answer"}),
             json.dumps({"q": "list", "a": [1, 2]}), json.dumps(GOOD[0]), "", json.dumps({"q": "num", "a": 42}),
             "[1, 2]"]
    path.write_text("\n".join(lines) + "\n")
    out = load_input(InputConfig(path=str(path), question_field="q", answer_field="a", metadata_fields=["src"]))
    assert out.rows_in == 8  # the blank line is not a row
    assert len(out.records) + len(out.rejected) == out.rows_in
    by_row = {r.source_row: r for r in out.rejected}
    assert by_row[1].field == "<row>" and "not valid JSON" in by_row[1].reason and by_row[1].raw == "{broken"
    assert by_row[2].field == "q" and "empty" in by_row[2].reason
    assert by_row[3].field == "a" and "missing" in by_row[3].reason
    assert by_row[4].field == "a"
    assert by_row[5].field == "q" and "duplicate of row 0" in by_row[5].reason
    assert "expected an object" in by_row[7].reason
    assert [r.gold_answer for r in out.records] == ["4", "42"]
    assert json.loads(out.records[0].metadata) == {"src": "x"}
    assert all(r.source_file == str(path) for r in out.records)


def test_fail_fast_names_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n" + json.dumps({"q": "x", "a": None}) + "\n")
    cfg = InputConfig(path=str(path), question_field="q", answer_field="a", on_bad_row="fail")
    with pytest.raises(RaftDataError, match=r"in.jsonl: row 1, field 'a': empty"):
        load_input(cfg)


def test_csv_parquet_and_datasets_folder_agree(tmp_path: Path) -> None:
    import datasets

    csv_path = tmp_path / "in.csv"
    csv_path.write_text("q,a,src\n" + "\n".join(f'"{r["q"]}",{r["a"]},{r["src"]}' for r in GOOD) + "\n")
    pq_path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD), pq_path)
    ds_path = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(GOOD)}).save_to_disk(str(ds_path))
    ids = []
    for path in (csv_path, pq_path, ds_path):
        out = load_input(InputConfig(path=str(path), question_field="q", answer_field="a"))
        assert not out.rejected and out.fingerprint
        ids.append([r.id for r in out.records])
    assert ids[0] == ids[1] == ids[2]


def test_limit_domain_field_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({**r, "dom": "chem"}) for r in GOOD) + "\n")
    out = load_input(InputConfig(path=str(path), question_field="q", answer_field="a", domain_field="dom", limit=1))
    assert out.rows_in == 1 and out.records[0].domain == "chem"
    with pytest.raises(RaftDataError, match="does not exist"):
        load_input(InputConfig(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(RaftDataError, match="cannot tell its format"):
        load_input(InputConfig(path=str(tmp_path / "data.xyz")))
    with pytest.raises(RaftDataError, match="Hub dataset"):
        load_input(InputConfig(path="some-org/not-here"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RaftDataError, match="no rows"):
        load_input(InputConfig(path=str(tmp_path / "empty.jsonl")))

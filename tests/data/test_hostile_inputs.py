"""Hostile inputs never crash a build: each one ends as a kept row, a rejected row with its
file, row, field and reason, or one clean error (issue 14).

The inputs are the files in tests/data/hostile/ plus two written here (a 1 MB answer is not
worth a checkout). `test_hostile_input_table` asserts every outcome and regenerates
docs/hostile_inputs.md; after an intended change run it with RAFT_UPDATE_DOCS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from raft_data.build import build
from raft_data.config import InputConfig, PipelineConfig
from raft_data.errors import RaftDataError
from raft_data.load import check_lengths, load_input
from schemas import read_manifest, read_records
from schemas.errors import SchemaError
from schemas.records import RefinedRecord, RejectedRecord

HOSTILE = Path(__file__).parent / "hostile"
DOC = Path(__file__).parents[2] / "docs" / "hostile_inputs.md"
SENTENCE = "The reaction of sodium with water releases hydrogen gas and heat. "


def write_generated(folder: Path) -> None:
    """Inputs too big to keep in the checkout."""
    rows = [
        {"question": "Summarize the lab notes.", "answer": (SENTENCE * 16_000)[:1_048_576]},  # 1 MiB
        {"question": "What is the symbol of sodium? " + SENTENCE * 400, "answer": "Na"},  # 26 KB question
        {"question": "Summarize the lab notes briefly.", "answer": SENTENCE * 40},  # ~2.6 KB: fits
        {"question": "What is the symbol of potassium?", "answer": "K"},
    ]
    (folder / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    big_csv = "question,answer\n" + f'"Summarize the lab notes.","{SENTENCE * 3000}"\n'  # ~200 KB cell
    (folder / "long_cell.csv").write_text(big_csv)


# (file, row, what the row holds, outcome, field, text the reason must contain).
# row None: the whole file gives one error. outcome "kept": the row goes on to the model
# (where it ends accepted or fallback), "rejected": in rejected/rejected.parquet, "error": a
# clean error (CLI exit 2), no build.
CASES: list[tuple[str, int | None, str, str, str, str]] = [
    ("malformed.jsonl", 0, "a good row", "kept", "", ""),
    ("malformed.jsonl", 1, "an unclosed JSON object", "rejected", "<row>", "not valid JSON"),
    ("malformed.jsonl", 2, "single-quoted keys", "rejected", "<row>", "not valid JSON"),
    ("malformed.jsonl", 3, "a CSV line in a JSONL file", "rejected", "<row>", "not valid JSON"),
    ("malformed.jsonl", 4, "a JSON array, not an object", "rejected", "<row>", "expected an object"),
    ("malformed.jsonl", 5, "a bare JSON string", "rejected", "<row>", "expected an object"),
    ("malformed.jsonl", 6, "a good row", "kept", "", ""),
    ("malformed.jsonl", 7, "arrays nested 5000 deep", "rejected", "<row>", "nested too deeply"),
    ("fields.jsonl", 0, "no question field", "rejected", "question", "missing"),
    ("fields.jsonl", 1, "no answer field", "rejected", "answer", "missing"),
    ("fields.jsonl", 2, 'answer ""', "rejected", "answer", "empty"),
    ("fields.jsonl", 3, "answer of whitespace only", "rejected", "answer", "empty"),
    ("fields.jsonl", 4, 'question ""', "rejected", "question", "empty"),
    ("fields.jsonl", 5, "answer 42 (a JSON number)", "kept", "", ""),
    ("fields.jsonl", 6, "answer 3.14", "kept", "", ""),
    ("fields.jsonl", 7, "answer a list", "rejected", "answer", "not text (list)"),
    ("fields.jsonl", 8, "answer null", "rejected", "answer", "not text (NoneType)"),
    ("fields.jsonl", 9, "answer an object", "rejected", "answer", "not text (dict)"),
    ("fields.jsonl", 10, "answer true", "rejected", "answer", "not text (bool)"),
    ("fields.jsonl", 11, "answer NaN", "rejected", "answer", "not a finite number"),
    ("fields.jsonl", 12, "answer Infinity", "rejected", "answer", "not a finite number"),
    ("fields.jsonl", 13, "answer with a lone surrogate escape \\ud800", "rejected", "answer", "surrogate"),
    ("fields.jsonl", 14, "question 7 (a number)", "kept", "", ""),
    ("duplicates.jsonl", 0, "a row", "kept", "", ""),
    ("duplicates.jsonl", 1, "another row", "kept", "", ""),
    ("duplicates.jsonl", 2, "row 0 again", "rejected", "question", "duplicate of row 0"),
    ("duplicates.jsonl", 3, "row 0 with extra spaces", "rejected", "question", "duplicate of row 0"),
    ("non_utf8.jsonl", 0, "a good row", "kept", "", ""),
    ("non_utf8.jsonl", 1, "Latin-1 bytes (caf\\xe9)", "rejected", "<row>", "byte offset 106"),
    ("non_utf8.jsonl", 2, "a stray \\xff byte", "rejected", "<row>", "not UTF-8"),
    ("non_utf8.jsonl", 3, "a good row", "kept", "", ""),
    ("non_utf8.csv", 0, "a good record", "kept", "", ""),
    ("non_utf8.csv", 1, "Latin-1 bytes in the answer cell", "rejected", "answer", "byte offset 69"),
    ("non_utf8.csv", 2, "a good record", "kept", "", ""),
    ("non_utf8.parquet", 0, "a good row", "kept", "", ""),
    ("non_utf8.parquet", 1, "invalid UTF-8 in a string column", "rejected", "answer", "not UTF-8"),
    ("non_utf8.parquet", 2, "a good row", "kept", "", ""),
    ("quoted.csv", 0, "quoted cells with commas (BOM, CRLF file)", "kept", "", ""),
    ("quoted.csv", 1, 'doubled "" quotes in a cell', "kept", "", ""),
    ("quoted.csv", 2, "a line break inside a quoted cell", "kept", "", ""),
    ("quoted.csv", 3, "only one cell", "rejected", "answer", "not text (NoneType)"),
    ("quoted.csv", 4, "more cells than columns", "rejected", "<row>", "more cells than header columns"),
    ("long_cell.csv", 0, "a 200 KB cell (over csv's default field limit)", "rejected", "answer", "over_model_length"),
    ("long.jsonl", 0, "a 1 MiB answer", "rejected", "answer", "over_model_length"),
    ("long.jsonl", 1, "a 26 KB question", "rejected", "question", "over_model_length"),
    ("long.jsonl", 2, "a 2.6 KB answer", "kept", "", ""),
    ("long.jsonl", 3, "a good row", "kept", "", ""),
    ("injection.jsonl", 0, '"Ignore previous instructions..." in the answer', "kept", "", ""),
    ("injection.jsonl", 1, "chat control tokens (<|im_end|>...) in the answer", "kept", "", ""),
    ("extra_columns.parquet", 0, "extra int, float, list, struct columns", "kept", "", ""),
    ("extra_columns.parquet", 1, "extra columns holding nulls", "kept", "", ""),
    ("empty.jsonl", None, "a 0-byte file", "error", "", "no rows found"),
    ("header_only.csv", None, "a CSV header and no records", "error", "", "no rows found"),
    ("not_parquet.parquet", None, "CSV text named .parquet", "error", "", "not a readable Parquet file"),
    ("newer_schema.parquet", None, "a refined shard stamped schema 2.0 (read by stage 2)", "error", "", "newer"),
]

KEPT = "goes to the model, then accepted or fallback"
NOTES = {
    ("injection.jsonl", 1): KEPT + "; `<|im_end|>` in the text stays text (tokenised with "
    "split_special_tokens), so it cannot end the user turn (tests/contract/test_chat.py)",
}


def _outcomes(name: str, cfg: PipelineConfig) -> tuple[dict[int, tuple[str, str, str]], str | None, int]:
    """row -> (outcome, field, message), or the file's error; and the rows read."""
    if name == "newer_schema.parquet":  # an output file: stage 2 and `inspect` read it
        try:
            read_records(name, RefinedRecord)
        except SchemaError as err:
            return {}, str(err), 0
        raise AssertionError("a newer schema was read")
    try:
        loaded = check_lengths(load_input(cfg.input.model_copy(update={"path": name})), cfg)
    except RaftDataError as err:
        return {}, str(err), 0
    out = {r.source_row: ("kept", "", "") for r in loaded.records}
    for r in loaded.rejected:
        assert r.source_row not in out, f"{name}: row {r.source_row} both kept and rejected"
        out[r.source_row] = ("rejected", r.field, r.reason)
    assert sorted(out) == list(range(loaded.rows_in)), f"{name}: rows {sorted(out)} of {loaded.rows_in}"
    return out, None, loaded.rows_in


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_doc(rows: list[tuple[str, str, str, str, str, str]]) -> str:
    lines = [
        "# Hostile inputs: what `raft-data build` does with them",
        "",
        "Generated by `tests/data/test_hostile_inputs.py` from the files in `tests/data/hostile/`",
        "(`long.jsonl` and `long_cell.csv` are written by the test); regenerate with",
        "`RAFT_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/data/test_hostile_inputs.py`.",
        "Settings: `input.on_bad_row: quarantine` and the default model, backend and sampling",
        "(`backend.max_model_len` 4096). Rows count from 0; blank lines and a CSV header are",
        "not rows.",
        "",
        "- **kept**: the row goes on to the model and ends *accepted* or *fallback* in",
        "  `data/`. Plain text that tries to instruct the model is just part of the",
        "  prompt's reference answer.",
        "- **rejected**: the row is written to `rejected/rejected.parquet` with file, row, field",
        "  and this reason; the build goes on. The manifest's `rows_in` = accepted + fallback +",
        "  rejected.",
        "- **error**: nothing is built; the message below is printed and `raft-data build`",
        "  exits 2 (no traceback). Under `input.on_bad_row: fail` the first rejected row is",
        "  such an error too, with the same file, row, field and reason.",
        "",
        "| input | row | holds | outcome | field | message |",
        "|---|---|---|---|---|---|",
    ]
    for file, row, holds, outcome, field, message in rows:
        lines.append(f"| `{file}` | {row} | {_cell(holds)} | {outcome} | {_cell(field)} | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def test_hostile_input_table(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in HOSTILE.iterdir():
        if not path.name.startswith("."):
            shutil.copy(path, tmp_path / path.name)
    write_generated(tmp_path)
    monkeypatch.chdir(tmp_path)  # messages then name the bare file
    cfg = PipelineConfig.model_validate(
        {"name": "hostile", "input": {"path": "x"}, "output": {"dir": "out"}, "model": str(tiny_model_dir)}
    )
    cache: dict[str, tuple[dict[int, tuple[str, str, str]], str | None, int]] = {}
    doc_rows = []
    for file, row, holds, outcome, field, needle in CASES:
        if file not in cache:
            cache[file] = _outcomes(file, cfg)
        by_row, error, _ = cache[file]
        if row is None:
            assert error is not None and needle in error, (file, error)
            assert outcome == "error"
            doc_rows.append((file, "-", holds, "error", "", error))
            continue
        assert error is None, (file, error)
        got = by_row[row]
        assert got[0] == outcome and got[1] == field and needle in got[2], (file, row, got)
        if outcome == "rejected":
            message = f"{file}: row {row}, field '{field}': {got[2]}"
        else:
            message = NOTES.get((file, row), KEPT)
        doc_rows.append((file, str(row), holds, outcome, field, message))
    # every row of every file is in the table
    for file, (_, _, rows_in) in cache.items():
        assert sorted(r for f, r, *_ in CASES if f == file and r is not None) == list(range(rows_in)), file
    text = render_doc(doc_rows)
    if os.environ.get("RAFT_UPDATE_DOCS") == "1":
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/hostile_inputs.md is out of date: rerun with RAFT_UPDATE_DOCS=1"
    )


def test_over_long_row_is_measured_cheaply_and_exactly(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A 1 MiB answer is rejected from its size alone; a 26 KB one by its exact token count."""
    write_generated(tmp_path)
    data: dict[str, Any] = {"name": "t", "input": {"path": str(tmp_path / "long.jsonl")}, "output": {"dir": "o"},
            "model": str(tiny_model_dir)}
    cfg = PipelineConfig.model_validate(data)
    loaded = check_lengths(load_input(cfg.input), cfg)
    reasons = {r.source_row: r.reason for r in loaded.rejected}
    assert reasons[0].startswith("over_model_length: ")
    assert "at least" in reasons[0] and "backend.max_model_len 4096" in reasons[0]
    assert "at least" not in reasons[1] and "backend.max_model_len 4096" in reasons[1]
    assert [r.source_row for r in loaded.records] == [2, 3]
    # the 2.6 KB answer does not fit 900 tokens once fusion's room is kept; it does without fusion
    small = {**data, "backend": {"max_model_len": 900}}
    assert 2 in {r.source_row for r in check_lengths(load_input(cfg.input), PipelineConfig.model_validate(small)).rejected}
    no_fusion = {**small, "fusion": {"enabled": False}}
    assert 2 not in {r.source_row for r in check_lengths(load_input(cfg.input), PipelineConfig.model_validate(no_fusion)).rejected}
    strict = PipelineConfig.model_validate({**data, "input": {**data["input"], "on_bad_row": "fail"}})
    with pytest.raises(RaftDataError, match=r"long.jsonl: row 0, field 'answer': over_model_length"):
        check_lengths(load_input(strict.input), strict)


def test_non_utf8_fails_cleanly_with_file_and_byte_offset(tmp_path: Path) -> None:
    for name, where in (("non_utf8.jsonl", "row 1"), ("non_utf8.csv", "row 1, field 'answer'")):
        cfg = InputConfig(path=str(HOSTILE / name), on_bad_row="fail")
        with pytest.raises(RaftDataError) as info:
            load_input(cfg)
        message = str(info.value)
        assert name in message and where in message and "byte offset" in message, message
    bad_header = tmp_path / "bad_header.csv"
    bad_header.write_bytes(b"question,answer,r\xe9f\nq,a,x\n")
    with pytest.raises(RaftDataError, match=r"bad_header.csv: the header line is not UTF-8.*byte offset 17"):
        load_input(InputConfig(path=str(bad_header)))


def test_cli_non_utf8_under_fail_exits_2_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "x", "input": {"path": str(HOSTILE / "non_utf8.jsonl"), "on_bad_row": "fail"},
        "output": {"dir": str(tmp_path / "out")},
    }))
    out = subprocess.run([sys.executable, "-m", "raft_data.cli", "build", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "non_utf8.jsonl: row 1" in out.stderr and "byte offset 106" in out.stderr


def test_hostile_rows_through_a_full_build(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One build over good and hostile rows: no request over the model length is sent, every
    row is accounted for, and the manifest's counts add up."""
    from raft_data.backends import TransformersBackend

    write_generated(tmp_path)
    lines = [line for name in ("malformed.jsonl", "injection.jsonl", "duplicates.jsonl", "long.jsonl")
             for line in (HOSTILE / name if name != "long.jsonl" else tmp_path / name).read_bytes().splitlines()]
    lines.insert(3, b'{"question": "Latin-1?", "answer": "caf\xe9"}')
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    limit = 4096
    sent: list[int] = []
    real_generate = TransformersBackend.generate

    def checked_generate(self, prompts, sampling, seeds):  # type: ignore[no-untyped-def]
        for p in prompts:
            assert len(p) + sampling.max_new_tokens <= limit, f"a {len(p)}-token prompt reached the engine"
            sent.append(len(p))
        return real_generate(self, prompts, sampling, seeds)

    monkeypatch.setattr(TransformersBackend, "generate", checked_generate)
    cfg = PipelineConfig.model_validate({
        "name": "hostile", "input": {"path": str(src)}, "output": {"dir": str(tmp_path / "out"), "shard_size": 8},
        "model": str(tiny_model_dir), "backend": {"engine": "transformers", "batch_size": 8, "max_model_len": limit},
        "rewrite": {"sampling": {"max_new_tokens": 8, "temperature": 0.0}},
        "fusion": {"rounds": 1, "sampling": {"max_new_tokens": 8}, "judge_sampling": {"max_new_tokens": 4, "temperature": 0.0}},
        "filter": {"tau": -1.0, "check_facts": False, "copy_threshold": 100, "repetition_threshold": 1.0},
        "measure_gap": False,
    })
    result = build(cfg)
    m = result.manifest
    assert m is not None and sent
    c = m.counts
    assert c.rows_in == len(lines) == 19
    assert c.accepted + c.fallback + c.rejected == c.rows_in
    kept = read_records(sorted(result.folder.glob("data/*.parquet")), RefinedRecord).to_pylist()
    rejected = read_records(result.folder / "rejected/rejected.parquet", RejectedRecord).to_pylist()
    assert len(kept) == c.accepted + c.fallback and len(rejected) == c.rejected
    rows = sorted([r["source_row"] for r in kept] + [r["source_row"] for r in rejected])
    assert rows == list(range(c.rows_in))
    for r in rejected:
        assert r["source_file"] == str(src) and r["field"] and r["reason"]
    by_row = {r["source_row"]: r for r in rejected}
    assert by_row[3]["field"] == "<row>" and "not UTF-8" in by_row[3]["reason"]
    long_rows = {r: by_row[r] for r in by_row if by_row[r]["reason"].startswith("over_model_length")}
    assert {(r, v["field"]) for r, v in long_rows.items()} == {(15, "answer"), (16, "question")}
    assert all(str(limit) in v["reason"] and "tokens" in v["reason"] for v in long_rows.values())
    assert read_manifest(result.folder).counts == c

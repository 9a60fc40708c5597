"""Load (question, gold answer) pairs from a file, a `datasets` folder or a Hub dataset.

Every input row ends up either as a `SourceRecord` or as a `RejectedRecord` that says
file, row, field and reason; with `on_bad_row: fail` the first bad row stops the build.
Reading the files is `raft_data/readers.py` (bytes, so a line or record that is not UTF-8
is one rejected row that names its byte offset, not a traceback); this module turns rows
into records. `check_lengths` then rejects rows whose prompts cannot fit the model
(`over_model_length`, `raft_data/lengths.py`) before any model is asked anything.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raft_data.config import InputConfig, PipelineConfig
from raft_data.errors import RaftDataError
from raft_data.lengths import length_check
from raft_data.readers import (
    Row,
    bad_row,
    detect_format,
    is_utf8,
    iter_csv,
    iter_jsonl,
    iter_parquet,
    iter_table_rows,
    read_rows,
)
from schemas.records import RejectedRecord, SourceRecord, row_id


@dataclass
class LoadedInput:
    records: list[SourceRecord]  # empty when streamed
    rejected: list[RejectedRecord]
    fingerprint: str
    source: str
    rows_in: int = 0
    columns: list[str] = field(default_factory=list)
    stream: _Stream | None = None  # a streamed JSONL file (`scan_input`)

    @property
    def count(self) -> int:
        """Rows kept (to be refined)."""
        return len(self.stream) if self.stream is not None else len(self.records)

    def chunk(self, start: int, stop: int) -> list[SourceRecord]:
        """Kept rows start..stop-1 (a shard), read back from the file when streamed."""
        return self.stream.read(start, stop) if self.stream is not None else self.records[start:stop]



def _text(value: Any) -> tuple[str | None, str]:
    """(text, why not). Gold answers may be numbers in JSON/Parquet; lists, dicts, blanks,
    NaN and strings that cannot be written as UTF-8 are not answers."""
    if isinstance(value, bool) or value is None:
        return None, f"empty or not text ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"not a finite number ({value})"
    if isinstance(value, (int, float)):
        return str(value), ""
    if isinstance(value, str) and value.strip():
        if not is_utf8(value):
            bad = next(ch for ch in value if not is_utf8(ch))
            return None, f"not text: holds the lone surrogate U+{ord(bad):04X}, which has no UTF-8 form"
        return value.strip(), ""
    return None, f"empty or not text ({type(value).__name__})"


def _metadata(item: dict[str, Any], fields: list[str]) -> str:
    return json.dumps({k: item.get(k) for k in fields}, sort_keys=True, default=str)


def _convert(item: dict[str, Any], cfg: InputConfig, source: str, row: int) -> SourceRecord | tuple[str, str]:
    """A row's record, or (field, reason) when it cannot be one (before the duplicate check)."""
    values: dict[str, str] = {}
    for role, name in (("question", cfg.question_field), ("answer", cfg.answer_field)):
        if name not in item:
            return name, f"missing (the {role} field; set input.{role}_field to map another column)"
        text, why = _text(item[name])
        if text is None:
            return name, why
        values[role] = text
    domain = cfg.domain
    if cfg.domain_field is not None:
        domain = _text(item.get(cfg.domain_field))[0] or cfg.domain
    return SourceRecord(
        id=row_id(domain, values["question"], values["answer"]),
        question=values["question"],
        gold_answer=values["answer"],
        domain=domain,
        metadata=_metadata(item, cfg.metadata_fields),
        source_file=source,
        source_row=row,
    )


@dataclass
class _Counts:
    rows_in: int = 0


def _validated(
    cfg: InputConfig, rows: Iterator[Row], rejected: list[RejectedRecord], counts: _Counts
) -> Iterator[tuple[Row, SourceRecord]]:
    """Each usable row with its record, in input order; every other row rejected (or, with
    `on_bad_row: fail`, the first one raised)."""
    source = cfg.path
    seen: dict[str, int] = {}

    def reject(row: int, raw: Any, fld: str, reason: str) -> None:
        bad_row(cfg.on_bad_row, rejected, source, row, raw, fld, reason)

    for parsed in rows:
        if cfg.limit is not None and counts.rows_in >= cfg.limit:
            break
        counts.rows_in += 1
        row, item = parsed.row, parsed.item
        if parsed.error is not None:
            reject(row, item, parsed.field, parsed.error)
            continue
        if not isinstance(item, dict):
            reject(row, item, "<row>", f"expected an object with fields, got {type(item).__name__}")
            continue
        record = _convert(item, cfg, source, row)
        if isinstance(record, tuple):
            reject(row, item, *record)
            continue
        if record.id in seen:
            reject(row, item, cfg.question_field, f"duplicate of row {seen[record.id]} (same domain, question and answer)")
            continue
        seen[record.id] = row
        yield parsed, record


def load_input(cfg: InputConfig) -> LoadedInput:
    """Read and validate every input row; bad rows are rejected with file, row, field, reason."""
    rows, fingerprint, _ = read_rows(cfg, detect_format(cfg))
    rejected: list[RejectedRecord] = []
    counts = _Counts()
    records = [record for _, record in _validated(cfg, rows, rejected, counts)]
    if counts.rows_in == 0:
        raise RaftDataError(f"input.path '{cfg.path}': no rows found")
    return LoadedInput(records, rejected, fingerprint, cfg.path, counts.rows_in)



def check_lengths(loaded: LoadedInput, cfg: PipelineConfig) -> LoadedInput:
    """Reject (`over_model_length`) the rows whose longest prompt plus the tokens it may
    generate would not fit its model's `max_model_len` (`backend:` or the role's
    `engines:` entry), before any request is sent.

    Tokens are counted with each model's own tokenizer. A row is not tokenized when its
    size in bytes decides: at most one token per byte (it fits), or at least one token per
    `max_token_bytes` bytes (it does not); both hold for byte-level BPE tokenizers only,
    and other tokenizers count every prompt exactly.
    """
    if not loaded.records:
        return loaded
    fits = length_check(cfg)
    rejected = list(loaded.rejected)
    kept = [r for r in loaded.records if fits(r, rejected, loaded.source)]
    if len(kept) == len(loaded.records):
        return loaded
    rejected.sort(key=lambda r: r.source_row)
    return replace(loaded, records=kept, rejected=rejected)



def scan_input(cfg: PipelineConfig) -> LoadedInput:
    """`check_lengths(load_input(...))` for a build, streamed: rows are validated and
    length-checked one at a time and only where each kept row starts is held (JSONL and
    CSV: its byte offset; Parquet: its row, read back a row group at a time; a `datasets`
    folder or Hub split: its row in the memory-mapped Arrow table), so memory does not
    grow with the input; `LoadedInput.chunk` reads a shard's rows back from there."""
    fmt = detect_format(cfg.input)
    path = Path(cfg.input.path)
    rows, fingerprint, table = read_rows(cfg.input, fmt)
    rejected: list[RejectedRecord] = []
    counts = _Counts()
    fits = length_check(cfg)
    starts = array("q")  # (row, where it starts) of each kept row, flat
    by_offset = fmt in ("jsonl", "csv")
    for parsed, record in _validated(cfg.input, rows, rejected, counts):
        if fits(record, rejected, cfg.input.path):
            starts.extend((parsed.row, parsed.offset if by_offset else parsed.row))
    if counts.rows_in == 0:
        raise RaftDataError(f"input.path '{cfg.input.path}': no rows found")
    rejected.sort(key=lambda r: r.source_row)
    loaded = LoadedInput([], rejected, fingerprint, cfg.input.path, counts.rows_in)
    loaded.stream = _Stream(path, fmt, cfg.input, starts, table)
    return loaded


@dataclass
class _Stream:
    """Where each kept input row starts (JSONL, CSV: byte offset; Parquet, Arrow table:
    row), to read any run of them back."""

    path: Path
    fmt: str
    cfg: InputConfig
    starts: array
    table: Any = None  # `datasets` folder / Hub split: the memory-mapped table

    def __len__(self) -> int:
        return len(self.starts) // 2

    def _rows_from(self, row: int, where: int) -> Iterator[Row]:
        if self.fmt == "jsonl":
            return iter_jsonl(self.path, where, row)
        if self.fmt == "csv":
            return iter_csv(self.path, where, row)
        if self.fmt == "parquet":
            return iter_parquet(self.path, row)
        return iter_table_rows(self.table, row)

    def read(self, start: int, stop: int) -> list[SourceRecord]:
        stop = min(stop, len(self))
        if start >= stop:
            return []
        wanted = {self.starts[2 * k] for k in range(start, stop)}
        out: list[SourceRecord] = []
        for parsed in self._rows_from(self.starts[2 * start], self.starts[2 * start + 1]):
            if parsed.row in wanted:
                record = _convert(parsed.item, self.cfg, self.cfg.path, parsed.row)
                assert isinstance(record, SourceRecord), record  # it was kept when first read
                out.append(record)
                if len(out) == stop - start:
                    break
        return out

"""Load (question, gold answer) pairs from a file, a `datasets` folder or a Hub dataset.

Every input row ends up either as a `SourceRecord` or as a `RejectedRecord` that says
file, row, field and reason; with `on_bad_row: fail` the first bad row stops the build.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft_data.config import InputConfig
from raft_data.errors import RaftDataError
from schemas.records import RejectedRecord, SourceRecord, row_id


@dataclass
class LoadedInput:
    records: list[SourceRecord]
    rejected: list[RejectedRecord]
    fingerprint: str
    source: str
    rows_in: int = 0
    columns: list[str] = field(default_factory=list)


def _detect_format(cfg: InputConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    path = Path(cfg.path)
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    if not path.exists() and cfg.path.count("/") == 1:
        return "hub"
    raise RaftDataError(
        f"input.path '{cfg.path}': cannot tell its format from the name; set input.format to "
        "one of jsonl, csv, parquet, datasets, hub"
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (row, object or None, parse error) for each non-blank line."""
    with path.open(encoding="utf-8") as handle:
        row = 0
        for line in handle:
            if not line.strip():
                continue
            try:
                yield row, json.loads(line), None
            except json.JSONDecodeError as err:
                yield row, line.rstrip("\n"), f"not valid JSON ({err.msg} at column {err.colno})"
            row += 1


def _iter_csv(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row, item in enumerate(reader):
            if None in item:
                yield row, item, "more cells than header columns"
            else:
                yield row, dict(item), None


def _iter_table(table: Any) -> Iterator[tuple[int, Any, str | None]]:
    for row, item in enumerate(table.to_pylist()):
        yield row, item, None


def _rows(cfg: InputConfig, fmt: str) -> tuple[Iterator[tuple[int, Any, str | None]], str]:
    path = Path(cfg.path)
    if fmt in ("jsonl", "csv", "parquet") and not path.is_file():
        raise RaftDataError(f"input.path '{cfg.path}' does not exist or is not a file")
    if fmt == "jsonl":
        return _iter_jsonl(path), _file_digest(path)
    if fmt == "csv":
        return _iter_csv(path), _file_digest(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:
            raise RaftDataError(f"{path}: not a readable Parquet file ({err})") from None
        return _iter_table(table), _file_digest(path)
    if fmt == "datasets":
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise RaftDataError(f"{path}: not a `datasets` folder saved with save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if cfg.split not in loaded:
                raise RaftDataError(f"{path}: no split '{cfg.split}'; it has {sorted(loaded)}")
            loaded = loaded[cfg.split]
        return _iter_table(loaded.data.table), loaded._fingerprint
    import datasets

    try:
        hub = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as err:
        raise RaftDataError(
            f"input.path '{cfg.path}': could not load the Hub dataset split '{cfg.split}' "
            f"({type(err).__name__}: {err}). Offline? Download it first or point to a local file."
        ) from None
    return _iter_table(hub.data.table), hub._fingerprint


def _text(value: Any) -> str | None:
    """Gold answers may be numbers in JSON/Parquet; lists, dicts and blanks are not answers."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _metadata(item: dict[str, Any], fields: list[str]) -> str:
    return json.dumps({k: item.get(k) for k in fields}, sort_keys=True, default=str)


def load_input(cfg: InputConfig) -> LoadedInput:
    """Read and validate every input row; bad rows are rejected with file, row, field, reason."""
    fmt = _detect_format(cfg)
    rows, fingerprint = _rows(cfg, fmt)
    source = cfg.path
    records: list[SourceRecord] = []
    rejected: list[RejectedRecord] = []
    seen: dict[str, int] = {}
    rows_in = 0

    def reject(row: int, raw: Any, fld: str, reason: str) -> None:
        message = f"{source}: row {row}, field '{fld}': {reason}"
        if cfg.on_bad_row == "fail":
            raise RaftDataError(message + " (set input.on_bad_row: quarantine to keep going)")
        raw_text = raw if isinstance(raw, str) else json.dumps(raw, default=str, sort_keys=True)
        rejected.append(
            RejectedRecord(source_file=source, source_row=row, field=fld, reason=reason, raw=raw_text)
        )

    for row, item, error in rows:
        if cfg.limit is not None and rows_in >= cfg.limit:
            break
        rows_in += 1
        if error is not None:
            reject(row, item, "<row>", error)
            continue
        if not isinstance(item, dict):
            reject(row, item, "<row>", f"expected an object with fields, got {type(item).__name__}")
            continue
        values: dict[str, str] = {}
        bad = False
        for role, name in (("question", cfg.question_field), ("answer", cfg.answer_field)):
            if name not in item:
                reject(row, item, name, f"missing (the {role} field; set input.{role}_field to map another column)")
                bad = True
                break
            text = _text(item[name])
            if text is None:
                reject(row, item, name, f"empty or not text ({type(item[name]).__name__})")
                bad = True
                break
            values[role] = text
        if bad:
            continue
        domain = cfg.domain
        if cfg.domain_field is not None:
            domain = _text(item.get(cfg.domain_field)) or cfg.domain
        rid = row_id(domain, values["question"], values["answer"])
        if rid in seen:
            reject(row, item, cfg.question_field, f"duplicate of row {seen[rid]} (same domain, question and answer)")
            continue
        seen[rid] = row
        records.append(
            SourceRecord(
                id=rid,
                question=values["question"],
                gold_answer=values["answer"],
                domain=domain,
                metadata=_metadata(item, cfg.metadata_fields),
                source_file=source,
                source_row=row,
            )
        )
    if rows_in == 0:
        raise RaftDataError(f"input.path '{source}': no rows found")
    return LoadedInput(records, rejected, fingerprint, source, rows_in)

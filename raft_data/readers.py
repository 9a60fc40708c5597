"""Input files read as rows: JSONL, CSV/TSV, Parquet, a `datasets` folder or a Hub split.

Files are read as bytes, so a line or record that is not UTF-8 is one bad row that names
its byte offset, not a traceback; each row says where it starts (JSONL and CSV: its byte
offset; the others: its row number) so `load.scan_input` can read any run of rows back.
What a row must hold to become a record is `raft_data/load.py`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raft_data.config import InputConfig
from raft_data.errors import RaftDataError
from schemas.records import RejectedRecord


@dataclass(frozen=True)
class Row:
    """One input row as read: its item (or raw text) and, for a bad row, why and where."""

    row: int
    item: Any
    error: str | None = None
    field: str = "<row>"
    offset: int = -1  # JSONL: byte offset of the line in the file


def bad_row(on_bad_row: str, rejected: list[RejectedRecord], source: str, row: int, raw: Any, fld: str, reason: str) -> None:
    """Quarantine a bad row, or stop on it under `on_bad_row: fail`."""
    if on_bad_row == "fail":
        raise RaftDataError(
            f"{source}: row {row}, field '{fld}': {reason} (set input.on_bad_row: quarantine to keep going)"
        )
    raw_text = raw if isinstance(raw, str) else json.dumps(raw, default=str, sort_keys=True)
    rejected.append(RejectedRecord(source_file=source, source_row=row, field=fld, reason=reason, raw=raw_text))


def detect_format(cfg: InputConfig) -> str:
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


def _not_utf8(err: UnicodeDecodeError, offset: int) -> str:
    """`offset`: where the decoded bytes start in the file."""
    bad = err.object[err.start]
    return (
        f"not UTF-8 text: byte 0x{bad:02x} at byte offset {offset + err.start} of the file "
        f"({err.reason}); save the file as UTF-8"
    )


def _lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for each line of a file from `offset` (a line start), without a
    leading UTF-8 BOM."""
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
                start = len(codecs.BOM_UTF8)
            yield start, raw


def iter_jsonl(path: Path, offset: int = 0, row: int = 0) -> Iterator[Row]:
    """One row per non-blank line: the parsed object, or the raw line and why not; from
    byte `offset`, the start of row number `row`."""
    for start, raw in _lines(path, offset):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield Row(row, text, _not_utf8(err, start), offset=start)
            row += 1
            continue
        try:
            parsed = Row(row, json.loads(line), offset=start)
        except json.JSONDecodeError as err:
            parsed = Row(row, line, f"not valid JSON ({err.msg} at column {err.colno})", offset=start)
        except RecursionError:
            parsed = Row(row, line, "not valid JSON here (nested too deeply)", offset=start)
        yield parsed
        row += 1


def _first_bad_byte(lines: list[tuple[int, bytes]]) -> str | None:
    for offset, raw in lines:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return _not_utf8(err, offset)
    return None


def is_utf8(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(cell: str) -> str:
    """A cell decoded with surrogateescape, with its undecodable bytes as \\xNN."""
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def iter_csv(path: Path, offset: int = 0, row: int = 0) -> Iterator[Row]:
    """One row per record, {column: cell} as `csv.DictReader` gives (a short record's
    missing cells are None); from byte `offset` (0, or where record number `row` starts:
    a record starts at a line start), the header always read from the file's start.

    The reader is fed lines decoded with `surrogateescape`, so a record with bytes that
    are not UTF-8 is still parsed (quotes and line breaks included) and is rejected
    alone, with the column and byte offset of the first bad byte.
    """
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    pending: list[tuple[int, bytes]] = []  # the lines of the record being read
    source = [_lines(path)]  # switched to `offset` once the header is read

    def text_lines() -> Iterator[str]:
        while True:
            try:
                start, raw = next(source[0])
            except StopIteration:
                return
            pending.append((start, raw))
            yield raw.decode("utf-8", "surrogateescape")

    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 2**31 - 1))  # long cells are measured later, in tokens
    try:
        reader = csv.reader(text_lines(), delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise RaftDataError(f"{path}: the header line is not valid CSV ({err})") from None
        if header is None:
            return
        bad = _first_bad_byte(pending)
        if bad is not None:
            raise RaftDataError(f"{path}: the header line is {bad}")
        pending.clear()
        if offset:
            source[0] = _lines(path, offset)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raw = b"".join(r for _, r in pending).decode("utf-8", "backslashreplace")
                pending.clear()
                yield Row(row, raw, f"not valid CSV ({err})")
                row += 1
                continue
            lines = pending[:]
            pending.clear()
            if cells:  # not a blank line
                yield _csv_row(row, header, cells, lines)
                row += 1
    finally:
        csv.field_size_limit(limit)


def _csv_row(row: int, header: list[str], cells: list[str], lines: list[tuple[int, bytes]]) -> Row:
    """A parsed CSV record as a row: {column: cell}, or a bad row that says why (bytes
    that are not UTF-8, shown as \\xNN; more cells than header columns)."""
    start = lines[0][0]
    item: dict[str, Any] = dict(zip(header, cells, strict=False))
    for name in header[len(cells) :]:
        item.setdefault(name, None)
    extra = cells[len(header) :]
    bad = _first_bad_byte(lines)
    if bad is not None:
        column = next((k for k, v in item.items() if isinstance(v, str) and not is_utf8(v)), "<row>")
        shown = {k: _shown(v) if isinstance(v, str) else v for k, v in item.items()}
        if extra:
            shown["<extra cells>"] = [_shown(c) for c in extra]
        return Row(row, shown, bad, column, offset=start)
    if extra:
        return Row(row, {**item, "<extra cells>": extra}, "more cells than header columns", offset=start)
    return Row(row, item, offset=start)


def _iter_table(table: Any, first_row: int = 0) -> Iterator[Row]:
    """One row per table row (numbered from `first_row`). Parquet does not check that
    strings are UTF-8: a value that is not is a bad row, named by its column."""
    columns: dict[str, list[Any]] = {}
    bad: dict[int, tuple[str, str]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            columns[name] = column.to_pylist()
        except UnicodeDecodeError:
            values = []
            for i in range(len(column)):
                try:
                    values.append(column[i].as_py())
                except UnicodeDecodeError as err:
                    byte = err.object[err.start]
                    bad.setdefault(i, (name, f"not UTF-8 text: byte 0x{byte:02x} at byte {err.start} of the value ({err.reason})"))
                    values.append(None)
            columns[name] = values
    for row in range(table.num_rows):
        item = {name: values[row] for name, values in columns.items()}
        if row in bad:
            yield Row(first_row + row, item, bad[row][1], bad[row][0])
        else:
            yield Row(first_row + row, item)


TABLE_BATCH = 1024  # rows of an Arrow table turned into Python objects at a time


def iter_table_rows(table: Any, start_row: int = 0) -> Iterator[Row]:
    """`_iter_table` a batch of rows at a time, from row `start_row`: a `datasets` folder's
    or the Hub cache's table is memory-mapped, so only the batch is held in memory."""
    for first in range(start_row, table.num_rows, TABLE_BATCH):
        yield from _iter_table(table.slice(first, TABLE_BATCH), first)


def _parquet(path: Path) -> Any:
    """The open file, or the error `pq.read_table` gives for it."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        handle.schema_arrow  # noqa: B018  (reads the footer)
        return handle
    except Exception:
        pass
    try:
        pq.read_table(path)
    except Exception as err:
        raise RaftDataError(f"{path}: not a readable Parquet file ({err})") from None
    raise RaftDataError(f"{path}: not a readable Parquet file (its footer)")


def iter_parquet(path: Path, start_row: int = 0) -> Iterator[Row]:
    """Row group by row group (the rows of one group in memory at a time), from the group
    that holds row `start_row`."""
    handle = _parquet(path)
    first = 0
    for group in range(handle.num_row_groups):
        rows = handle.metadata.row_group(group).num_rows
        if first + rows > start_row:
            try:
                table = handle.read_row_group(group)
            except Exception as err:
                raise RaftDataError(f"{path}: row group {group} is not readable ({err})") from None
            yield from (r for r in _iter_table(table, first) if r.row >= start_row)
        first += rows


def read_rows(cfg: InputConfig, fmt: str) -> tuple[Iterator[Row], str, Any]:
    """(the input's rows, its fingerprint, the memory-mapped Arrow table of a `datasets`
    folder or Hub split, else None)."""
    path = Path(cfg.path)
    if fmt in ("jsonl", "csv", "parquet") and not path.is_file():
        raise RaftDataError(f"input.path '{cfg.path}' does not exist or is not a file")
    if fmt == "jsonl":
        return iter_jsonl(path), _file_digest(path), None
    if fmt == "csv":
        return iter_csv(path), _file_digest(path), None
    if fmt == "parquet":
        _parquet(path)  # a file that is not Parquet fails here, before any row
        return iter_parquet(path), _file_digest(path), None
    table, fingerprint = _table(cfg, fmt)
    return iter_table_rows(table), fingerprint, table


def _table(cfg: InputConfig, fmt: str) -> tuple[Any, str]:
    """A `datasets` folder's or a Hub dataset split's Arrow table (memory-mapped from disk:
    `load_from_disk`, or `load_dataset`'s cache) and its fingerprint."""
    import datasets

    path = Path(cfg.path)
    if fmt == "datasets":
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise RaftDataError(f"{path}: not a `datasets` folder saved with save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if cfg.split not in loaded:
                raise RaftDataError(f"{path}: no split '{cfg.split}'; it has {sorted(loaded)}")
            loaded = loaded[cfg.split]
        return loaded.data.table, loaded._fingerprint
    try:
        hub = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as err:
        raise RaftDataError(
            f"input.path '{cfg.path}': could not load the Hub dataset split '{cfg.split}' "
            f"({type(err).__name__}: {err}). Offline? Download it first or point to a local file."
        ) from None
    return hub.data.table, hub._fingerprint


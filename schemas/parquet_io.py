"""Versioned Parquet files: the only way records cross from stage 1 to stage 2.

Each file carries its schema name and version in the Parquet key-value metadata. Readers
refuse unknown names, newer versions and missing columns with a message that names the
file, and writes are atomic (temp file + rename) so a killed writer never leaves a
half-written shard behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from schemas.errors import SchemaError
from schemas.records import RefinedRecord, RejectedRecord

# 1.2 added the manifest's counts.meta_text (1.1 manifests read it as 0);
# 1.1 added RefinedRecord's contradictions, rewrite_finish_reason and answer_check* columns;
# 1.0 files still read, with those columns at their defaults.
SCHEMA_VERSION = "1.2"
SCHEMA_NAMES: dict[str, type[BaseModel]] = {
    "raft.refined": RefinedRecord,
    "raft.rejected": RejectedRecord,
}
META_NAME = b"raft.schema_name"
META_VERSION = b"raft.schema_version"
META_EXTRA = b"raft.extra"


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """Map a field annotation to (arrow type, nullable)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _arrow_type(inner[0])[0], True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        item, _ = _arrow_type(args[0])
        return pa.list_(item), False
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if annotation in simple:
        return simple[annotation], False
    raise TypeError(f"unsupported field type {annotation}")


def arrow_schema(record_type: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a record type, derived from its Pydantic fields."""
    fields = []
    for name, info in record_type.model_fields.items():
        dtype, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, dtype, nullable=nullable))
    return pa.schema(fields)


def _schema_name(record_type: type[BaseModel]) -> str:
    for name, cls in SCHEMA_NAMES.items():
        if cls is record_type:
            return name
    raise TypeError(f"{record_type.__name__} is not a versioned record type")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the whole new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shared datasets must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(
    path: str | Path,
    records: Sequence[BaseModel],
    record_type: type[BaseModel],
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write records to one Parquet file, atomically, stamped with schema name/version."""
    path = Path(path)
    schema = arrow_schema(record_type)
    rows = [r.model_dump(mode="json") for r in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    meta = {
        META_NAME: _schema_name(record_type).encode(),
        META_VERSION: SCHEMA_VERSION.encode(),
        META_EXTRA: json.dumps(extra_metadata or {}, sort_keys=True).encode(),
    }
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parse_version(text: str, where: str) -> tuple[int, int]:
    try:
        major, minor = text.split(".")
        return int(major), int(minor)
    except ValueError:
        raise SchemaError(f"{where}: schema version '{text}' is not of the form MAJOR.MINOR") from None


def check_file_schema(path: str | Path, record_type: type[BaseModel]) -> dict[str, str]:
    """Check one file's schema stamp and columns; return its extra metadata."""
    path = Path(path)
    expected = _schema_name(record_type)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise SchemaError(f"{path}: not a readable Parquet file ({err})") from None
    meta = schema.metadata or {}
    name = meta.get(META_NAME, b"").decode()
    version = meta.get(META_VERSION, b"").decode()
    if not name:
        raise SchemaError(
            f"{path}: no RAFT schema stamp in the Parquet metadata; this file was not written "
            "by `raft-data build` (rebuild it, or write it with schemas.write_records)"
        )
    if name != expected:
        raise SchemaError(f"{path}: holds schema '{name}', expected '{expected}'")
    have = _parse_version(version, str(path))
    mine = _parse_version(SCHEMA_VERSION, "this toolkit")
    if have[0] != mine[0] or have > mine:
        raise SchemaError(
            f"{path}: schema {name} version {version} is newer than or incompatible with the "
            f"version this toolkit reads ({SCHEMA_VERSION}); upgrade raft-toolkit"
        )
    want = arrow_schema(record_type)
    missing = [f.name for f in want if f.name not in schema.names]
    if have < mine:  # an older minor version: columns added since then take their defaults
        missing = [m for m in missing if record_type.model_fields[m].is_required()]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {', '.join(missing)} for {name} {version}")
    for field in want:
        if field.name not in schema.names:
            continue
        got = schema.field(field.name).type
        if not got.equals(field.type) and not (
            pa.types.is_large_string(got) and pa.types.is_string(field.type)
        ):
            raise SchemaError(
                f"{path}: column '{field.name}' has type {got}, expected {field.type}"
            )
    extra = meta.get(META_EXTRA, b"{}").decode()
    return dict(json.loads(extra))


def read_records(
    paths: str | Path | Iterable[str | Path],
    record_type: type[BaseModel],
    validate_rows: bool = True,
    columns: list[str] | None = None,
) -> pa.Table:
    """Read and check one or more files of one record type into one Arrow table.

    With `validate_rows`, every row is also validated by the Pydantic model, and the first
    bad row is reported with its file and row number. `columns`: only these (a summary of a
    large dataset need not hold its texts); rows are then not validated.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    tables = []
    names = [f.name for f in arrow_schema(record_type) if columns is None or f.name in columns]
    validate_rows = validate_rows and columns is None
    schema = pa.schema([arrow_schema(record_type).field(n) for n in names])
    for path in paths:
        check_file_schema(path, record_type)
        present = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[n for n in names if n in present])
        for name in names:
            if name not in present:  # added in a later minor version: its default
                info = record_type.model_fields[name]
                default = info.get_default(call_default_factory=True)
                field = arrow_schema(record_type).field(name)
                table = table.append_column(field, pa.array([default] * table.num_rows, field.type))
        table = table.select(names)
        if validate_rows:
            for i, row in enumerate(table.to_pylist()):
                try:
                    record_type.model_validate(row)
                except ValidationError as err:
                    first = err.errors()[0]
                    field = ".".join(str(p) for p in first["loc"])
                    raise SchemaError(
                        f"{path}: row {i}, field '{field}': {first['msg']}"
                    ) from None
        tables.append(table.cast(schema))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def shard_paths(folder: str | Path, pattern: str = "data/*.parquet") -> list[Path]:
    """The Parquet shards of a dataset folder, in name order."""
    return sorted(Path(folder).glob(pattern))

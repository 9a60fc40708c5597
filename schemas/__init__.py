"""The contract between `raft_data` and `raft_distill`: records, manifest, versioned Parquet."""

from schemas.errors import SchemaError
from schemas.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from schemas.parquet_io import (
    SCHEMA_VERSION,
    arrow_schema,
    check_file_schema,
    read_records,
    shard_paths,
    write_records,
)
from schemas.records import RefinedRecord, RejectedRecord, SourceRecord, row_id
from schemas.teacher_context import (
    TEACHER_FORMATS,
    TEACHER_TEMPLATE,
    TeacherFormat,
    teacher_context_ids,
    teacher_context_text,
)

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "TEACHER_FORMATS",
    "TEACHER_TEMPLATE",
    "Manifest",
    "RefinedRecord",
    "RejectedRecord",
    "SchemaError",
    "SourceRecord",
    "TeacherFormat",
    "arrow_schema",
    "check_file_schema",
    "read_manifest",
    "read_records",
    "row_id",
    "shard_paths",
    "teacher_context_ids",
    "teacher_context_text",
    "write_manifest",
    "write_records",
]

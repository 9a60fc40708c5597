"""The rows of an eval suite's JSON Lines file, one reader for every suite: blank lines
skipped, the first `limit` rows, each a JSON object, errors naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError


def jsonl_rows(path: str | Path, limit: int | None, what: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where = "file:line", row) for the first `limit` non-blank lines; `what` names the
    file in the missing-file error (e.g. "QA")."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{what} file '{path}' does not exist")
    count = 0
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DistillError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DistillError(f"{where}: expected a JSON object")
            count += 1
            yield where, row

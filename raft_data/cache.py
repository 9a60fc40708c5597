"""Content-addressed cache of model calls, so a killed build redoes no finished request.

A key hashes everything that decides a call's output: the engine and dtype, the model id
and revision (for a local folder, a content fingerprint of its files), the exact prompt
token ids, sampling parameters and seed, and the cache format version. Results are committed
a whole batch at a time, so a batch is either fully cached or not at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Bump when what a cached value holds changes (2: generations carry their finish reason).
CACHE_VERSION = 2


def call_key(
    kind: str, engine: str, model: str, revision: str, prompt: list[int], params: dict[str, Any]
) -> str:
    payload = json.dumps(
        {
            "v": CACHE_VERSION,
            "kind": kind,
            "engine": engine,
            "model": model,
            "revision": revision,
            "prompt": prompt,
            "params": params,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


BUSY_TIMEOUT_S = 120.0


def _retry_locked(action: Callable[[], object], timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Run `action`, retrying while SQLite says the database is locked. Switching a new file
    to WAL takes an exclusive lock, and SQLite answers a second process that tries at the
    same moment with an immediate "database is locked", not a wait: N workers started
    together would otherwise lose all but one."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


class CallCache:
    """A small SQLite table of key -> JSON value, one file per output folder."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Workers (`--worker I/N`) share this file: wait for each other's writes.
        self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        _retry_locked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        _retry_locked(self._create)

    def _create(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        self._db.close()

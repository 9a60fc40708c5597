"""Per-request seeds derived from content, so a row samples the same text in any run order."""

from __future__ import annotations

import hashlib


def request_seed(base: int, *parts: object) -> int:
    text = ":".join([str(base), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

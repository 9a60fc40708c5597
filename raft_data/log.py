"""Stage 1's log: every decision that changes the result, said once, kept with the output.

Modules log through `logging.getLogger(__name__)`, under the `raft_data` logger. A build
writes DEBUG and up to a file of its own, `<output.dir>/.raft/logs/build-<UTC time>.log`
(`.raft/` is local state: `raft-data push` never uploads it); the CLI adds INFO and up on
stderr. INFO is what changes the result: the engine and why, its dtype and CPU settings,
each shard redone and why, fallbacks and rejections by reason. DEBUG adds each reused
shard, per-shard counts and timings. A library caller gets the file; stderr is theirs to
configure.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from schemas.run_logs import TqdmStderr, file_handler

LOGGER = "raft_data"


def log_to_stderr(level: int = logging.INFO) -> None:
    """INFO and up on stderr as `raft-data: message` (once per process; the CLI calls it)."""
    logger = logging.getLogger(LOGGER)
    if any(isinstance(h, TqdmStderr) for h in logger.handlers):
        return
    handler = TqdmStderr(level)
    handler.setFormatter(logging.Formatter("raft-data: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False  # the process is the CLI's: no second copy from the root logger
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)


@contextmanager
def run_log(folder: Path, name: str) -> Iterator[Path]:
    """DEBUG and up to a new file `folder/<name>-<UTC time>.log` while the block runs; an
    error that ends the block is written there with its traceback (stderr gets the CLI's
    one-line message)."""
    handler = file_handler(folder, name)
    path = Path(handler.baseFilename)
    logger = logging.getLogger(LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield path
    except BaseException:
        logger.debug("%s stopped by an error", name, exc_info=True)
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def by_reason(reasons: Iterable[str]) -> str:
    """'low_similarity 3, truncated 1' from reason strings; a reason's code is its text up
    to the first ':' or ' (' (`truncated: cut off at ...`, `missing (the answer field ...)`)."""
    counts = Counter(re.split(r":| \(", reason, maxsplit=1)[0] for reason in reasons)
    return ", ".join(f"{code} {n}" for code, n in counts.most_common()) or "none"

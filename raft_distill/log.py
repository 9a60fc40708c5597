"""Stage 2's log: every decision that changes the result, said once, kept with the run.

Modules log through `logging.getLogger(__name__)`, under the `raft_distill` logger. While
`fit` runs, `run_log` writes DEBUG and up to a new file of that run,
`<train.output_dir>/logs/fit-<UTC time>.log`, and INFO and up to stderr (through tqdm,
so the progress bar stays whole). INFO is what changes the result: bf16 on or off and
why, the teacher and its context format, rows skipped by reason, the step count, the
rollout engine, the trackers, the resume point. DEBUG adds each skipped row, each step's
losses and each checkpoint. Under several processes only the main one writes the file
and INFO; the others print WARNING and up, prefixed with their rank. The same shape as
stage 1's `raft_data/log.py` (the two packages never import each other).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schemas.run_logs import TqdmStderr, file_handler

LOGGER = "raft_distill"


@contextmanager
def run_log(folder: Path, name: str, main: bool = True, rank: int = 0) -> Iterator[Path | None]:
    """The run's log file (main process) and stderr lines while the block runs; yields the
    file's path (None off the main process). An error that ends the block is written to
    the file with its traceback."""
    console = TqdmStderr(logging.INFO if main else logging.WARNING)
    prefix = "raft-distill" if main else f"raft-distill [rank {rank}]"
    console.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    handlers: list[logging.Handler] = [console]
    path = None
    if main:
        to_file = file_handler(folder, name)
        handlers.append(to_file)
        path = Path(to_file.baseFilename)
    logger = logging.getLogger(LOGGER)
    level = logger.level
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield path
    except BaseException:
        logger.debug("%s stopped by an error", name, exc_info=True)
        raise
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)

"""Log plumbing both stages use for their per-run logs (`raft_data/log.py`,
`raft_distill/log.py`): the file format, a run's log file, and stderr lines that leave a
tqdm progress bar whole. Here because the two packages never import each other."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TqdmStderr(logging.Handler):
    """Lines on stderr that do not break a progress bar drawn there."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a logging handler must not raise (logging.Handler's contract)
            self.handleError(record)


def file_handler(folder: Path, name: str) -> logging.FileHandler:
    """DEBUG and up to a new file `folder/<name>-<UTC time>.log`."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    handler = logging.FileHandler(folder / f"{name}-{stamp}.log", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return handler

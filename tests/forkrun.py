"""Run a CLI under tests/killpoints.py in a process forked from a warm server (test helper).

The kill -9 sweeps start 7-10 processes each, and a fresh interpreter spends most of a
tiny-model run importing torch, transformers, accelerate, datasets and
sentence-transformers (~4-5 s of ~7 on one core). Python's forkserver imports them once,
in a clean process of its own, and forks a child per run: each run is still a separate
process that SIGKILLs itself at its stage point and leaves its files as a killed CLI
would; only the imports are shared. Where the platform has no fork (or
RAFT_TEST_FORKSERVER=0), runs fall back to a fresh interpreter.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

KILLPOINTS = Path(__file__).resolve().parent / "killpoints.py"
# what a build or a fit imports before its first model call (the CLIs themselves import lazily)
PRELOAD = [
    "torch", "transformers", "transformers.models.llama.modeling_llama", "accelerate",
    "datasets", "sentence_transformers", "raft_data.build", "raft_data.backends",
    "raft_data.cli", "raft_distill.train", "raft_distill.run_setup", "raft_distill.cli",
    "tests.killpoints",
]
_context: Any = None


def _forkserver() -> Any:
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: the run's environment, folder and stdio, then the CLI."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    if "OMP_NUM_THREADS" in env:  # the server's torch read its own value at import
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    from tests import killpoints

    sys.argv = [str(KILLPOINTS), *argv]
    killpoints.main()


def run_killpoints(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """`python tests/killpoints.py *argv` with `env` as its whole environment; returns
    what subprocess.run(capture_output=True, text=True) would (a SIGKILL: returncode -9)."""
    if os.environ.get("RAFT_TEST_FORKSERVER", "1") == "0" or "forkserver" not in mp.get_all_start_methods():
        cmd = [sys.executable, str(KILLPOINTS), *argv]
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        proc = _forkserver().Process(target=_child, args=(argv, str(cwd), env, out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(argv, timeout, Path(out).read_text(), Path(err).read_text())
        return subprocess.CompletedProcess(
            argv, proc.exitcode, Path(out).read_text(errors="replace"), Path(err).read_text(errors="replace")
        )

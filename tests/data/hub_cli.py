"""`raft-data` as a subprocess against the stub Hub (tests/data/hub_stub.py).

huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET at import time, so the CLI runs in
a child process with them in its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.data.hub_stub import StubHub

TOKEN = "hf_stubTOKEN_9f8e7d6c5b4a"
REPO = "someone/refined-chem"


def run_cli(
    hub: StubHub, tmp_path: Path, *args: str, token: str | None = TOKEN, xet: bool = True, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "HF_TOKEN"}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_DISABLE_XET="0" if xet else "1",
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf-home"),  # no cached login, a fresh download cache
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra_env)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "raft_data.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def push(
    hub: StubHub, tmp_path: Path, folder: Path, *extra: str, token: str | None = TOKEN, xet: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(hub, tmp_path, "push", str(folder), REPO, *extra, token=token, xet=xet, **env)

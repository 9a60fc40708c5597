"""Build -> push -> train input: stage 2 reads a pushed dataset by its Hub id (stub Hub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hub_stub import StubHub, make_built_folder

TOKEN = "hf_stubTOKEN_roundtrip"
REPO = "someone/refined-roundtrip"


def test_raft_distill_reads_a_pushed_dataset_by_hub_id(tmp_path: Path) -> None:
    built = tmp_path / "out"
    make_built_folder(built)
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    with StubHub(token=TOKEN) as hub:
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_HOME=str(tmp_path / "hf-home"),
            NO_PROXY="127.0.0.1,localhost",
            HF_TOKEN=TOKEN,
        )
        pushed = subprocess.run(
            [sys.executable, "-m", "raft_data.cli", "push", str(built), REPO],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert pushed.returncode == 0, pushed.stderr
        code = (
            "from raft_distill.data import load_rows\n"
            f"rows, config_hash = load_rows({REPO!r})\n"
            "print(len(rows), config_hash, sorted(r['decision'] for r in rows))\n"
        )
        read = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split()[0] == "5"  # accepted + fallback rows; rejected ones are not training data
    assert "c0ffee1234567890" in read.stdout

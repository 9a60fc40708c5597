"""Build -> push -> train input: stage 2 reads a pushed dataset by its Hub id (stub Hub).

Both ways go through Xet, as with huggingface.co when hf_xet is installed: the push uploads
xorbs and a shard to the stub's CAS, the read downloads the Parquet files from their
reconstructions (xorb byte ranges)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.data.hub_stub import StubHub, make_built_folder

TOKEN = "hf_stubTOKEN_roundtrip"
REPO = "someone/refined-roundtrip"


def test_raft_distill_reads_a_pushed_dataset_by_hub_id(tmp_path: Path) -> None:
    built = tmp_path / "out"
    make_built_folder(built)
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    with StubHub(token=TOKEN) as hub:
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_DISABLE_XET="0",
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
        hub.requests.clear()
        code = (
            "from raft_distill.data import load_rows\n"
            f"rows, config_hash = load_rows({REPO!r})\n"
            "print(len(rows), config_hash, sorted(r['decision'] for r in rows))\n"
        )
        read = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        reconstructed = {r.path.rsplit("/", 1)[1] for r in hub.requests if r.server == "cas" and "/reconstructions/" in r.path}
        xet_files = {h for sha, h in hub.xet_files.items() if any(sha == hashlib.sha256(d).hexdigest() for d in hub.files(REPO).values())}
    assert read.returncode == 0, read.stderr
    assert read.stdout.split()[0] == "5"  # accepted + fallback rows; rejected ones are not training data
    assert "c0ffee1234567890" in read.stdout
    assert xet_files and xet_files <= reconstructed  # every Parquet/PNG file came through Xet

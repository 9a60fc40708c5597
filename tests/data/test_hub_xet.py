"""The stub Hub's Xet storage is faithful: what hf_xet uploads, in each chunk compression it
can choose, is rebuilt byte for byte, and hf_xet downloads it back through the stub's CAS."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from raft_data.hub import transfer_path
from tests.data.hub_cli import REPO, TOKEN, push
from tests.data.hub_stub import StubHub, make_built_folder


def _mixed_bytes(seed: int) -> bytes:
    """~600 KB across several Xet chunks: random (stored raw), repetitive (LZ4) and float32
    with a constant exponent (what byte grouping is for)."""
    rng = random.Random(seed)
    noise = rng.randbytes(250_000)
    text = b"boiling point of compound 7; " * 9000
    floats = b"".join(struct.pack("<f", 1.0 + rng.random()) for _ in range(60_000))
    return noise + text + floats


def _schemes(xorb: bytes) -> set[int]:
    seen, i = set(), 0
    while i + 8 <= len(xorb) and xorb[i] == 0:
        seen.add(xorb[i + 4])
        i += 8 + int.from_bytes(xorb[i + 1 : i + 4], "little")
    return seen


@pytest.mark.parametrize(("policy", "scheme"), [("none", 0), ("lz4", 1), ("bg4-lz4", 2)])
def test_xet_upload_and_download_round_trip_in_every_chunk_compression(tmp_path: Path, policy: str, scheme: int) -> None:
    built = tmp_path / "out"
    make_built_folder(built)
    payload = _mixed_bytes(len(policy))
    (built / "similarity.png").write_bytes(payload)
    with StubHub(token=TOKEN) as hub:
        result = push(hub, tmp_path, built, HF_XET_XORB_COMPRESSION_POLICY=policy)
        assert result.returncode == 0, result.stderr
        assert hub.files(REPO)["similarity.png"] == payload
        assert scheme in set().union(*(_schemes(x) for x in hub.xorbs.values()))
        sha = hashlib.sha256(payload).hexdigest()
        assert sha in hub.xet_files and len(hub.xet_terms[hub.xet_files[sha]]) >= 1

        hub.requests.clear()
        code = (
            "import sys\nfrom huggingface_hub import hf_hub_download\n"
            f"print(hf_hub_download({REPO!r}, 'similarity.png', repo_type='dataset', local_dir=sys.argv[1]))\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.update(
            HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="0", HF_TOKEN=TOKEN,
            HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost",
        )
        got = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dl")], env=env, capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "dl" / "similarity.png").read_bytes() == payload
        assert any(r.server == "cas" and "/reconstructions/" in r.path for r in hub.requests)
        assert any(r.path.startswith("/xet-xorbs/") and "range" in r.headers for r in hub.requests)


def test_transfer_path_follows_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants
    from huggingface_hub.utils._runtime import is_xet_available

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    assert transfer_path().startswith("Xet storage (hf_xet ") == is_xet_available()
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    assert transfer_path() == "Git LFS (HF_HUB_DISABLE_XET is set)" and not is_xet_available()

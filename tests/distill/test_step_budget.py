"""The opt-in trajectory budget `rollout.target_length_factor` (issue 22): each z is cut at
ceil(factor x its row's SFT target tokens), at most max_new_tokens, and a capped z is the
z the uncapped rollout samples, cut at its cap (the other rows' draws do not change)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raft_distill.config import RolloutConfig, config_from_dict
from raft_distill.rollout import row_caps, sample_trajectories
from raft_distill.train import fit
from tests.distill.helpers import tiny_config

EOS, PAD = 2, 0


def test_caps_follow_the_target_length_and_stay_under_max_new_tokens():
    assert row_caps(RolloutConfig(max_new_tokens=96), [3, 200]) == [96, 96]
    capped = RolloutConfig(max_new_tokens=96, target_length_factor=1.5)
    assert row_caps(capped, [3, 27, 200]) == [5, math.ceil(1.5 * 27), 96]


def test_the_factor_must_be_positive():
    with pytest.raises(ValueError):
        RolloutConfig(target_length_factor=0.0)


def _micro_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float()


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_a_capped_rollout_is_the_uncapped_one_cut_at_each_cap(temperature):
    lm = _micro_llama()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    cfg = RolloutConfig(max_new_tokens=24, temperature=temperature)
    cpu = torch.device("cpu")
    for seed in range(3):
        torch.manual_seed(seed)
        full = sample_trajectories(lm, prompts, cfg, PAD, {EOS}, cpu)
        caps = [3, 24, 1, 10]
        torch.manual_seed(seed)
        capped = sample_trajectories(lm, prompts, cfg, PAD, {EOS}, cpu, caps=caps)
        assert capped == [z[:c] for z, c in zip(full, caps, strict=True)]
        assert max(len(z) for z in full) > 3  # the caps cut something


def test_a_fit_with_the_budget_keeps_each_z_under_its_cap(tiny_model_dir, tiny_dataset, tmp_path):
    """On the tiny model (targets of ~8-12 tokens, max_new_tokens 32) a factor of 0.5 cuts
    every z at half its target: the metrics count them as cut, the trajectories are shorter."""
    tokens = {}
    for factor in (None, 0.5):
        out = tmp_path / str(factor)
        raw = tiny_config(
            tiny_model_dir, tiny_dataset, out,
            rollout={"max_new_tokens": 32, "target_length_factor": factor},
            train={"max_steps": 2, "seed": 7},
        )
        fit(config_from_dict(raw))
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        tokens[factor] = [r["trajectory_tokens"] for r in rows]
        if factor:
            assert all(r["max_new_tokens_fraction"] > 0 for r in rows)
    assert all(a < b for a, b in zip(tokens[0.5], tokens[None], strict=True))

"""The joint student pass (raft_distill/joint.py): [x, y^, z] packed with x read once gives
the hidden states, losses and gradients of the two separate passes, up to float rounding.

Fast tests build a micro Llama in memory (no tokenizer, no fit); the step-level tests fit
the tiny Llama both ways (slow tier: they ask for tiny_model_dir)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raft_distill.config import config_from_dict
from raft_distill.joint import joint_supported, pack_joint, place_segments
from raft_distill.student import StudentScorer
from raft_distill.teacher import pack
from raft_distill.train import fit
from tests.distill.helpers import tiny_config

PAD = 0


def _micro_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa").float()


def _rows(seed: int = 0) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Prompts, targets and trajectories of uneven lengths (one z of a single token)."""
    rng = random.Random(seed)
    draw = lambda n: [rng.randrange(1, 40) for _ in range(n)]  # noqa: E731
    xs = [draw(n) for n in (5, 9, 3, 7)]
    ys = [draw(n) for n in (6, 2, 11, 4)]
    zs = [draw(n) for n in (8, 1, 5, 12)]
    return xs, ys, zs


def test_segments_are_placed_without_overlap_within_the_widest():
    lengths = [10, 3, 7, 4, 6]
    where, width = place_segments(lengths)
    assert width == 10
    spans: dict[int, list[tuple[int, int]]] = {}
    for (row, start), n in zip(where, lengths, strict=True):
        assert 0 <= start and start + n <= width
        spans.setdefault(row, []).append((start, start + n))
    for row_spans in spans.values():
        row_spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(row_spans, row_spans[1:], strict=False))
    assert len(spans) == 3  # 10 | 7 + 3 | 6 + 4: the short ones fill the long ones' padding


def test_no_attention_row_is_empty_and_z_never_sees_its_target():
    xs, ys, zs = _rows()
    packed = pack_joint(xs, ys, zs, PAD)
    assert bool(packed.attention_mask.any(dim=-1).all())
    where, _ = place_segments([len(x) + len(y) + len(z) for x, y, z in zip(xs, ys, zs, strict=True)])
    for (row, start), x, y, z in zip(where, xs, ys, zs, strict=True):
        z_rows = packed.attention_mask[row, 0, start + len(x) + len(y) : start + len(x) + len(y) + len(z)]
        assert not z_rows[:, start + len(x) : start + len(x) + len(y)].any()  # y^ hidden from z
        assert z_rows[:, start : start + len(x)].all()  # x seen whole


def _separate_hidden(lm: Any, xs: list[list[int]], conts: list[list[int]]) -> torch.Tensor:
    packed = pack(xs, conts, PAD)
    hidden = lm.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).last_hidden_state
    return hidden[packed.batch_index, packed.position_index]


def test_joint_hidden_states_equal_the_two_separate_sequences():
    lm = _micro_llama()
    xs, ys, zs = _rows()
    packed = pack_joint(xs, ys, zs, PAD)
    with torch.no_grad():
        hidden = lm.model(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
        ).last_hidden_state
        sft = _separate_hidden(lm, xs, ys)
        kl = _separate_hidden(lm, xs, zs)
    torch.testing.assert_close(hidden[packed.sft.batch_index, packed.sft.position_index], sft)
    torch.testing.assert_close(hidden[packed.kl.batch_index, packed.kl.position_index], kl)
    assert packed.sft.targets.tolist() == sum(ys, [])
    assert packed.kl.targets.tolist() == sum(zs, [])
    assert packed.kl.weight.tolist() == pytest.approx(sum(([1 / len(z)] * len(z) for z in zs), []))
    assert packed.kl.first.sum() == len(zs)


def test_scorer_joint_gives_the_separate_losses_and_gradients():
    """kind="joint" returns the CE sum and the K logits of kind="sft" and kind="kl", and a
    backward of both gives the summed gradients of the two separate backwards."""
    lm = _micro_llama()
    scorer = StudentScorer(lm, chunk=8)
    xs, ys, zs = _rows(1)
    topk = torch.randint(0, 40, (sum(len(z) for z in zs), 6))
    mix = torch.randn(topk.shape)

    def fields(p: Any) -> dict[str, torch.Tensor]:
        return {"batch_index": p.batch_index, "position_index": p.position_index}

    sp, kp = pack(xs, ys, PAD), pack(xs, zs, PAD)
    ce = scorer(sp.input_ids, sp.attention_mask, **fields(sp), kind="sft", targets=sp.targets)
    v_k = scorer(kp.input_ids, kp.attention_mask, **fields(kp), kind="kl", topk_ids=topk)
    (ce + (v_k * mix).sum()).backward()
    want = {n: p.grad.clone() for n, p in scorer.named_parameters()}
    scorer.zero_grad()
    jp = pack_joint(xs, ys, zs, PAD)
    ce_j, v_j = scorer(
        jp.input_ids, jp.attention_mask, **fields(jp.sft), kind="joint", targets=jp.sft.targets,
        topk_ids=topk, position_ids=jp.position_ids, kl_batch_index=jp.kl.batch_index,
        kl_position_index=jp.kl.position_index,
    )
    (ce_j + (v_j * mix).sum()).backward()
    torch.testing.assert_close(ce_j, ce)
    torch.testing.assert_close(v_j, v_k)
    for name, p in scorer.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_sliding_window_narrower_than_the_row_rules_the_joint_pass_out():
    llama = LlamaConfig()
    assert joint_supported(llama, 10_000)
    gemma_like = LlamaConfig(sliding_window=8)
    gemma_like.layer_types = ["sliding_attention", "full_attention"]
    assert joint_supported(gemma_like, 8) and not joint_supported(gemma_like, 9)
    full_types = LlamaConfig(sliding_window=8)
    full_types.layer_types = ["full_attention", "full_attention"]
    assert joint_supported(full_types, 100)
    mistral_like = LlamaConfig(sliding_window=16)  # no layer_types: the window applies
    assert not joint_supported(mistral_like, 17)
    qwen_like = LlamaConfig(sliding_window=16)
    qwen_like.use_sliding_window = False
    assert joint_supported(qwen_like, 100)


def _fit_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    fit(config_from_dict(raw))
    out = Path(raw["train"]["output_dir"])
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "sections",
    [
        {"train": {"gradient_accumulation_steps": 1}},  # EMA lambda, one micro-batch
        {"loss": {"mode": "raft", "lambda": 0.5}, "train": {"gradient_accumulation_steps": 2}},
        # teacher: the base, adapters off; a fixed lambda (the EMA's is ~1e5 here)
        {"loss": {"lambda": 0.5}, "train": {"lora": {"r": 4, "alpha": 8}, "report_to": []}},
    ],
    ids=["ema", "fixed-2-micro", "lora"],
)
def test_joint_and_separate_passes_fit_the_same_steps(
    sections, tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path
):
    """3 steps each way from the same start: the same trajectories, and losses, lambda and
    gradient norm equal to float32 rounding (the later steps through the updated weights).
    With LoRA the teacher is the student's own base and L_KL ~1e-4, so the rounding of
    the near-equal logits shows at ~3e-4 relative in it (the hidden states agree to 2e-6:
    the fast tests above)."""
    rows = {}
    for how in ("separate", "joint"):
        parts = {k: dict(v) for k, v in sections.items()}
        if "lora" not in parts["train"]:
            parts.setdefault("model", {})["teacher"] = str(tiny_teacher_dir)
        parts["train"].update(max_steps=3, seed=1234, lr=1e-2, student_pass=how)
        rows[how] = _fit_rows(tiny_config(tiny_model_dir, tiny_dataset, tmp_path / how, **parts))
    rel = 1e-3 if "lora" in sections["train"] else 1e-4
    for a, b in zip(rows["separate"], rows["joint"], strict=True):
        assert a["trajectory_tokens"] == b["trajectory_tokens"]
        assert b["loss_sft"] == pytest.approx(a["loss_sft"], rel=1e-5)
        for key in ("loss", "loss_kl", "lambda", "grad_norm", "topk_mass", "kl_first_position"):
            assert b[key] == pytest.approx(a[key], rel=rel), key

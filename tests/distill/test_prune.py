"""FAPM (raft_distill.prune): the score on a hand-made matrix, exact pruning counts, ratio 0
= the fine-tuned weights, ratio 1 = the base weights, and a pruned folder that transformers
loads and generates from (tiny random Llamas: seed 0 = base, seed 1 = "fine-tuned")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_distill.errors import DistillError
from raft_distill.prune import REPORT_FILE, fapm_scores, keep_mask, matrix_type, prune, prune_tensor


def test_score_formula_on_a_hand_made_matrix():
    pre = torch.tensor([[1.0, -2.0], [0.5, 0.0]])  # mean |W_pre| = 0.875
    ft = torch.tensor([[1.5, -2.0], [0.0, 0.25]])
    # dW = [[0.5, 0], [-0.5, 0.25]]; S = |dW| - 0.875 * |dW| / |W_pre|
    expected = torch.tensor([[0.5 - 0.875 * 0.5, 0.0], [0.5 - 0.875 * 1.0, -math.inf]])
    assert torch.equal(fapm_scores(ft - pre, pre), expected)
    # ratio 0.5: the two lowest scores (-inf at W_pre = 0, then -0.375) are pruned
    new, mask = prune_tensor(pre, ft, 0.5)
    assert mask.tolist() == [[True, True], [False, False]]
    assert torch.equal(new, torch.tensor([[1.5, -2.0], [0.5, 0.0]]))
    # an all-zero base matrix: magnitude of dW alone
    assert torch.equal(fapm_scores(ft, torch.zeros(2, 2)), ft.abs())


def test_exact_count_with_ties():
    scores = torch.zeros(10)
    for ratio, kept in ((0.0, 10), (0.3, 7), (0.9, 1), (1.0, 0)):
        assert int(keep_mask(scores, ratio).sum()) == kept
    assert keep_mask(torch.arange(4.0), 0.5).tolist() == [False, False, True, True]


def test_matrix_type():
    assert matrix_type("model.layers.11.mlp.down_proj.weight") == "mlp.down_proj.weight"
    assert matrix_type("model.embed_tokens.weight") == "embed_tokens.weight"
    assert matrix_type("lm_head.weight") == "lm_head.weight"


def _state(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def states(tiny_model_dir: Path, tiny_teacher_dir: Path) -> tuple[dict, dict]:
    return _state(tiny_model_dir), _state(tiny_teacher_dir)


def test_ratio_0_is_finetuned_and_ratio_1_is_base(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, states: tuple[dict, dict]
):
    base, ft = states
    prune(str(tiny_model_dir), str(tiny_teacher_dir), tmp_path / "r0", ratio=0.0, targets="all")
    assert all(torch.equal(v, ft[k]) for k, v in _state(tmp_path / "r0").items())
    prune(str(tiny_model_dir), str(tiny_teacher_dir), tmp_path / "r1", ratio=1.0, targets="all")
    assert all(torch.equal(v, base[k]) for k, v in _state(tmp_path / "r1").items())


def test_linear_targets_load_generate_and_report(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, states: tuple[dict, dict]
):
    from raft_distill.cli import main

    base, ft = states
    out = tmp_path / "pruned"
    args = ["prune", "--base", str(tiny_model_dir), "--finetuned", str(tiny_teacher_dir),
            "--output", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / REPORT_FILE).read_text())
    assert json.loads(result.stdout)["by_type"] == report["by_type"]
    assert report["ratio"] == 0.9 and report["targets"] == "linear"
    assert report["tensors_pruned"] == 2 * 7  # q k v o gate up down per layer
    for kind in ("self_attn.q_proj.weight", "mlp.down_proj.weight"):
        assert report["by_type"][kind]["kept_fraction"] == pytest.approx(0.1, abs=0.01)
        assert 0.1 < report["by_type"][kind]["delta_norm_kept"] < 1.0
    assert "embed_tokens.weight" in report["kept_fine_tuned"]
    pruned = _state(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    moved = (pruned[q] != base[q]).float().mean().item()
    assert moved == pytest.approx(0.1, abs=0.01)
    assert torch.equal(torch.where(pruned[q] != base[q], pruned[q], ft[q]), ft[q])
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(pruned[name], ft[name])

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Hello", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 3

    again = CliRunner().invoke(main, args)  # a non-empty output folder is refused
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite", "--ratio", "0.5"]).exit_code == 0


def test_mismatched_models_name_the_tensor(tmp_path: Path, tiny_model_dir: Path, smollm2_dir: Path):
    from tests.tiny_llama import make_tiny_llama

    other = make_tiny_llama(tmp_path / "wide", smollm2_dir, seed=0, head_dim=32)
    with pytest.raises(DistillError, match="differ at 'model.layers.0.self_attn"):
        prune(str(tiny_model_dir), str(other), tmp_path / "out")

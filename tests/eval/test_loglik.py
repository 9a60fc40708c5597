"""The shared-prefix log-likelihood scorer against a plain per-choice forward (tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raft_distill.evaluate.loglik import (
    attention_mask,
    batches,
    encode,
    item_rows,
    mc_metrics,
    pack,
    predictions,
    score_items,
)
from raft_distill.evaluate.mc_tasks import MCItem

ITEMS = [
    MCItem("arc_easy", "a", "Question: What do plants need to grow?\nAnswer:",
           ("sunlight", "darkness and cold", "plastic", "a long, winding road to nowhere"), 0),
    MCItem("piqa", "b", "Question: How do I open a jar?\nAnswer:",
           ("Twist the lid counterclockwise.", "Hit it."), 1),
    MCItem("boolq", "c", "Paris is in France.\nQuestion: is paris in france?\nAnswer:",
           ("no", "yes"), 1),
    MCItem("hellaswag", "d", "Cooking: A man cracks an egg into a pan. He",
           ("stirs it slowly.", "flies away over the sea and the mountains.", "laughs.", "sings."), 2),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return lm, AutoTokenizer.from_pretrained(tiny_model_dir)


def _direct(lm, tok, item: MCItem, context_ids: list[int] | None = None) -> list[float]:
    """One plain causal forward per choice over context + continuation."""
    ctx = context_ids if context_ids is not None else encode(tok, item.context)
    sums = []
    with torch.no_grad():
        for cont in item.continuations():
            ids = encode(tok, cont)
            logp = lm(torch.tensor([ctx + ids])).logits[0].float().log_softmax(-1)
            sums.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(ids)))
    return sums


def test_pack_layout():
    packed = pack([10, 11, 12], [[20, 21], [30, 31, 32]], max_length=64)
    assert packed.ids == [10, 11, 12, 20, 21, 30, 31, 32]
    assert packed.positions == [0, 1, 2, 3, 4, 3, 4, 5]
    assert packed.segments == [-1, -1, -1, 0, 0, 1, 1, 1]
    assert packed.predictors == [[2, 3], [2, 5, 6]]
    assert packed.targets == [[20, 21], [30, 31, 32]]
    # a context longer than max_length - longest continuation is cut from the left
    assert pack(list(range(10)), [[1, 2, 3]], max_length=6).ids == [7, 8, 9, 1, 2, 3]


def test_mask_sees_context_and_own_segment_only():
    seg = torch.tensor([[-1, -1, 0, 0, 1, -2]])
    allowed = attention_mask(seg, torch.float32)[0, 0] == 0
    assert allowed[3].tolist() == [True, True, True, True, False, False]
    assert allowed[4].tolist() == [True, True, False, False, True, False]
    assert allowed[1].tolist() == [True, True, False, False, False, False]
    assert allowed[5].tolist() == [True, True, False, False, False, True]  # pad: itself


def test_batches_respect_the_budget():
    groups = batches([5, 50, 7, 40, 6], token_budget=100)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert groups[0] == [1, 3]
    assert all(len(g) * max([5, 50, 7, 40, 6][i] for i in g) <= 100 for g in groups)


@pytest.mark.parametrize("budget", [32, 4096])
def test_packed_scores_equal_per_choice_forwards(tiny, budget):
    """Whatever the batching (one item per forward, or all padded together), every
    choice's summed log-probability equals a separate forward over context + choice."""
    lm, tok = tiny
    got = score_items(lm, tok, ITEMS, token_budget=budget, max_length=256, progress=False)
    for item, sums in zip(ITEMS, got, strict=True):
        assert sums == pytest.approx(_direct(lm, tok, item), abs=1e-4)


def test_truncated_context_scores_like_the_cut_context(tiny):
    lm, tok = tiny
    item = ITEMS[3]
    longest = max(len(encode(tok, c)) for c in item.continuations())
    got = score_items(lm, tok, [item], max_length=longest + 5, progress=False)[0]
    cut = encode(tok, item.context)[-5:]
    assert got == pytest.approx(_direct(lm, tok, item, cut), abs=1e-4)


def test_predictions_pick_the_highest_sum_and_per_character():
    item = MCItem("arc_easy", "x", "Q", ("ab", "abcdefgh", "abcd"), 1)
    # sums: -4, -6, -5 -> acc picks 0; per char: -2, -0.75, -1.25 -> acc_norm picks 1
    assert predictions(item, [-4.0, -6.0, -5.0]) == (0, 1)
    assert predictions(item, [-1.0, -1.0, -3.0]) == (0, 1)  # ties go to the first choice


def test_rows_and_metrics_follow_the_tasks_metric(tiny):
    lm, tok = tiny
    lls = score_items(lm, tok, ITEMS, progress=False)
    rows = item_rows(ITEMS, lls)
    for item, row, sums in zip(ITEMS, rows, lls, strict=True):
        best = max(range(len(sums)), key=lambda k: sums[k])
        assert row["pred"] == best and row["acc"] == int(best == item.gold)
        metric = "acc" if item.task == "boolq" else "acc_norm"
        assert row["correct"] == row[metric]
    metrics = mc_metrics(rows)
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / 4
    assert set(metrics["by_task"]) == {"arc_easy", "piqa", "boolq", "hellaswag"}
    assert set(metrics) == {"accuracy", "by_task", "acc_by_task", "acc_norm_by_task"}

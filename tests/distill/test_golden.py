"""Pinned losses: 3 steps of `fit` on the tiny models, compared with hard-coded numbers.

As torchtune's recipe tests do: a refactor of the trainer that changes any number fails
here loudly, not in a quality drift weeks later. The models are the session's tiny random
Llamas (student seed 0, teacher seed 1), transformers rollouts sampled with the fixed
`train.seed`, float32 on CPU. The numbers hold for this torch/transformers build
(torch 2.13.0+cpu, transformers 5.19.0); a new build may move them in the last digits:
rerun with `-s` and the failure prints the new table to paste, after checking that the
change comes from the library and not from the code.

What each case pins: `raft-ema` the two-phase gradient (g_SFT + lambda * g_KL with the EMA
lambda) over 2 micro-batches; `raft-ema-1` the EMA lambda with one micro-batch, and
`raft-fixed` a fixed lambda, both through the joint student pass (one backward of
L_SFT + lambda * L_KL); `sft` and `on-policy` each loss term alone. Losses at steps 2 and 3 depend on the weights after
each optimizer step, so they pin the gradients and the AdamW step as well.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from raft_distill.config import config_from_dict
from raft_distill.train import fit
from tests.distill.helpers import tiny_config

KEYS = ("loss", "loss_sft", "loss_kl", "lambda", "grad_norm", "trajectory_tokens")

CASES: dict[str, dict[str, Any]] = {
    "raft-ema": {"loss": {"mode": "raft"}, "train": {"gradient_accumulation_steps": 2}},
    "raft-fixed": {"loss": {"mode": "raft", "lambda": 0.5}},
    "raft-ema-1": {"loss": {"mode": "raft"}},
    "sft": {"loss": {"mode": "sft"}},
    "on-policy": {"loss": {"mode": "on-policy"}},
}

# (loss, loss_sft, loss_kl, lambda, grad_norm, trajectory_tokens) for steps 1, 2, 3; re-pinned
# for torch's fused AdamW (same update, rounding differs ~1e-6 relative from step 2), then for
# the SFT CE as torch's chunked F.linear_cross_entropy (same sums in another order: <= 4e-8
# relative at step 1, <= 6e-6 by step 3 through the EMA lambda; on-policy, no CE, unchanged)
GOLDEN: dict[str, list[tuple[float | None, ...]]] = {
    "raft-ema": [
        (21.58471885940189, 10.792364501953125, 0.010638621635735035, 1014.4504360600008, 69.1660385131836, 32),
        (18.892725772053048, 10.738560643689386, 0.006348784314468503, 1284.3663801557732, 46.56467819213867, 32),
        (20.38891556041144, 10.467523574829102, 0.0075021490920335054, 1322.4733158286358, 84.5624771118164, 32),
    ],
    # raft-fixed re-pinned and raft-ema-1 (EMA, one micro-batch: the replication's layout)
    # added for the joint student pass (issue 22; raft_distill/joint.py, on by default on
    # CPU where lambda is known before the backward): loss_sft, grad_norm and the
    # trajectories kept every digit; loss_kl moved <= 2.6e-7 relative at step 1 and
    # <= 4.7e-6 by step 3 (a small KL, a difference of near-equal logits); raft-ema-1 is
    # within 7e-7 of the separate passes on every key (tests/distill/test_step_joint.py)
    "raft-fixed": [
        (10.797684701465602, 10.792365373883928, 0.010638655163347721, 0.5, 1.4823464155197144, 32),
        (10.741761719037232, 10.736676446322736, 0.010170545428991318, 0.5, 2.0431580543518066, 32),
        (10.136761334259063, 10.132370948791504, 0.008780770935118198, 0.5, 1.596367597579956, 32),
    ],
    "raft-ema-1": [
        (21.58472060329465, 10.792365373883928, 0.010638655163347721, 1014.447320991522, 69.16582489013672, 32),
        (18.892725900217705, 10.738560117524246, 0.006348805036395788, 1284.3622911631533, 46.56452560424805, 32),
        (20.388958016700442, 10.467522621154785, 0.007502223365008831, 1322.4660094526494, 84.56206512451172, 32),
    ],
    "sft": [
        (10.792365373883928, 10.792365373883928, None, None, 1.4833470582962036, 0),
        (10.746257913523706, 10.746257913523706, None, None, 2.0648868083953857, 0),
        (10.159475326538086, 10.159475326538086, None, None, 1.6174358129501343, 0),
    ],
    "on-policy": [
        (0.010301470756530762, None, 0.010301470756530762, None, 0.06719403713941574, 32),
        (0.006411031819880009, None, 0.006411031819880009, None, 0.036695029586553574, 32),
        (0.006828709505498409, None, 0.006828709505498409, None, 0.03386463224887848, 32),
    ],
}

REL = 1e-6


def _run(case: str, model_dir, teacher_dir, data_dir, out) -> list[dict[str, Any]]:
    sections = {k: dict(v) for k, v in CASES[case].items()}
    sections.setdefault("model", {})["teacher"] = str(teacher_dir)
    sections.setdefault("train", {}).update(max_steps=3, seed=1234, lr=1e-2)
    raw = tiny_config(model_dir, data_dir, out, **sections)
    fit(config_from_dict(raw))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("case", list(CASES))
def test_three_steps_match_the_pinned_losses(
    case, tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path
):
    rows = _run(case, tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path / case)
    got = [tuple(r[k] for k in KEYS) for r in rows]
    table = ",\n".join(f"        {g!r}" for g in got)
    print(f'\n    "{case}": [\n{table},\n    ],')
    want = GOLDEN[case]
    assert len(got) == len(want) == 3
    for step, (g_row, w_row) in enumerate(zip(got, want, strict=True), start=1):
        for key, g, w in zip(KEYS, g_row, w_row, strict=True):
            if w is None:
                assert g is None, (case, step, key)
            else:
                assert g == pytest.approx(w, rel=REL, abs=1e-12), (case, step, key, g, w)

"""The teacher's KL at z's first position vs the rest, per teacher-context format (issue 9).

At initialisation (student = teacher = the original model), for a few demo rows: the
student writes z greedily after its chat prompt; the teacher scores the same z ids after
its answer-conditioned context, in three layouts:
- plain_old: the paper's text ending "Answer: " tokenized alone (before issue 9): its
  trailing space is an orphan whitespace token right before z;
- plain: the same text ending "Answer:" (`teacher.format: plain`);
- plain_nl: "Answer:" then a newline (not an option of the project: the plain text
  stripped of trailing whitespace; shown because a chat student's z starts a line);
- chat: the text as the user turn of the chat template, z after the assistant header
  (`teacher.format: chat`, the default).
For each: per-position KL(q || p) (T = 1.5, top-K = 512, no T^2) at z's first position vs
the mean (and 90th percentile) over the other positions, the first position's share of
L_KL, L_KL (T^2 x mean over sequences of the per-token mean),
the teacher's top-1 token and probability (T = 1) at the first position, and its
probability of z's final end-of-turn token. The reference y^ is the row's gold answer (no
stage-1 output needed). Uses the project's own code: rollout, teacher.pack/score,
StudentScorer, loss.topk_forward_kl, schemas.teacher_context_ids.

    python benchmarks/teacher_boundary.py --out docs/teacher_boundary.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raft_distill import teacher  # noqa: E402
from raft_distill.config import RolloutConfig  # noqa: E402
from raft_distill.data import student_prompt_text  # noqa: E402
from raft_distill.loss import topk_forward_kl  # noqa: E402
from raft_distill.rollout import sample_trajectories  # noqa: E402
from raft_distill.student import StudentScorer  # noqa: E402
from schemas import teacher_context_ids  # noqa: E402

OLD_PLAIN = (
    "Background reference knowledge: {reference}\n"
    "Answer the question based on the reference knowledge: {question}\nAnswer: "
)


def contexts(tok: Any, fmt: str, q: str, a: str) -> list[int]:
    if fmt in ("plain_old", "plain_nl"):
        text = OLD_PLAIN.format(reference=a, question=q)
        text = text if fmt == "plain_old" else text.rstrip() + "\n"
        return list(tok(text, add_special_tokens=False)["input_ids"])
    return teacher_context_ids(tok, q, a, format=fmt)


@torch.no_grad()
def measure(
    model: Any,
    tok: Any,
    ctx: list[list[int]],
    prompts: list[list[int]],
    z: list[list[int]],
    k: int,
    temp: float,
) -> dict[str, Any]:
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    t_packed = teacher.pack(ctx, z, pad)
    scores = teacher.score(model, t_packed, k, 64, torch.device("cpu"))
    s_packed = teacher.pack(prompts, z, pad)
    v_k = StudentScorer(model, chunk=64)(
        s_packed.input_ids,
        s_packed.attention_mask,
        s_packed.batch_index,
        s_packed.position_index,
        "kl",
        topk_ids=scores.topk_ids,
    )
    kl = topk_forward_kl(scores.topk_values, v_k, temp)
    first = t_packed.first
    top1_p = torch.exp(scores.topk_values[:, 0] - scores.logsumexp)
    # teacher probability (T = 1) of each z token, when it is in the teacher's top-K
    hit = scores.topk_ids == t_packed.targets[:, None]
    p_tok = torch.where(hit, torch.exp(scores.topk_values - scores.logsumexp[:, None]), 0.0).sum(-1)
    last = torch.zeros_like(first)
    ends = torch.cumsum(torch.tensor([len(zi) for zi in z]), 0) - 1
    last[ends] = True
    eos = tok.eos_token_id
    ended = last & (t_packed.targets == eos)
    rows = []
    for i in range(len(z)):
        sel = t_packed.batch_index == i
        f, rest = kl[sel & first], kl[sel & ~first]
        j = int(torch.nonzero(sel & first)[0])
        rows.append(
            {
                "kl_first": float(f.mean()),
                "kl_rest_mean": float(rest.mean()) if rest.numel() else None,
                "first_top1": tok.decode([int(scores.topk_ids[j, 0])]),
                "first_top1_p": float(top1_p[j]),
                "p_final_eos": float(p_tok[sel & ended][0]) if bool((sel & ended).any()) else None,
            }
        )
    n_rest = int((~first).sum())
    per_seq = torch.zeros(len(z)).index_add_(0, t_packed.batch_index, kl * t_packed.weight)
    eos_p = [r["p_final_eos"] for r in rows if r["p_final_eos"] is not None]
    return {
        "kl_first_position": float(kl[first].mean()),
        "kl_other_positions": float(kl[~first].sum() / max(n_rest, 1)),
        "kl_other_p90": float(torch.quantile(kl[~first], 0.9)) if n_rest else None,
        "first_share_of_L_KL": float((kl * t_packed.weight)[first].sum() / per_seq.sum()),
        "L_KL": float(temp**2 * per_seq.mean()),
        "first_top1_p_mean": float(top1_p[first].mean()),
        "p_final_eos_mean": sum(eos_p) / len(eos_p) if eos_p else None,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO / "data" / "demo" / "train.jsonl"))
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.5)
    parser.add_argument("--out", default=str(REPO / "docs" / "teacher_boundary.json"))
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from schemas.model_registry import resolve_model

    started = time.perf_counter()
    torch.manual_seed(0)
    path = resolve_model(args.model).path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    lines = Path(args.data).read_text().splitlines()
    step = max(1, len(lines) // args.rows)
    picked = [json.loads(lines[i]) for i in range(0, len(lines), step)][: args.rows]
    qa = [(r["question"], r["answer"]) for r in picked]
    prompts = [
        list(tok(student_prompt_text(tok, q), add_special_tokens=False)["input_ids"]) for q, _ in qa
    ]
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    greedy = RolloutConfig(temperature=0.0, max_new_tokens=args.max_new_tokens)
    z = sample_trajectories(
        model, prompts, greedy, pad, {int(tok.eos_token_id)}, torch.device("cpu")
    )

    results: dict[str, Any] = {}
    for fmt in ("plain_old", "plain", "plain_nl", "chat"):
        ctx = [contexts(tok, fmt, q, a) for q, a in qa]
        results[fmt] = measure(model, tok, ctx, prompts, z, args.top_k, args.temperature)
        results[fmt]["boundary"] = repr(tok.decode(ctx[0][-3:]))

    print(
        f"{args.model}, {len(qa)} demo rows, greedy z (mean {sum(map(len, z)) / len(z):.1f} tokens), "
        f"T = {args.temperature}, K = {args.top_k}; KL per position, no T^2"
    )
    header = f"{'format':<10} {'KL first':>9} {'KL rest':>8} {'rest p90':>8} {'ratio':>6} {'first %L':>8} {'L_KL':>6} {'top1 p':>7} {'p eos':>6}  boundary"
    print(header)
    print("-" * len(header))
    for fmt, r in results.items():
        eos = "-" if r["p_final_eos_mean"] is None else f"{r['p_final_eos_mean']:.2f}"
        print(
            f"{fmt:<10} {r['kl_first_position']:>9.3f} {r['kl_other_positions']:>8.3f} "
            f"{r['kl_other_p90']:>8.3f} "
            f"{r['kl_first_position'] / r['kl_other_positions']:>6.1f} "
            f"{100 * r['first_share_of_L_KL']:>7.1f}% {r['L_KL']:>6.3f} {r['first_top1_p_mean']:>7.2f} "
            f"{eos:>6}  {r['boundary']}"
        )
    print(
        "first-position top-1 (plain_old):",
        [row["first_top1"] for row in results["plain_old"]["rows"]],
    )
    out = {
        "model": args.model,
        "rows": [
            {"question": q, "reference": a, "z": tok.decode(zi)}
            for (q, a), zi in zip(qa, z, strict=True)
        ],
        "settings": {
            "top_k": args.top_k,
            "temperature": args.temperature,
            "max_new_tokens": args.max_new_tokens,
            "rollout": "greedy",
        },
        "results": results,
        "seconds": time.perf_counter() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

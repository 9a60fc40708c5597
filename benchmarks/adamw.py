"""AdamW step time: torch's for-loop, foreach and fused implementations (issue 11, item 3).

One model's parameters (the embedded SmolLM2-135M by default, fp32, as `raft-distill fit`
keeps them) with random gradients; the two parameter groups `Trainer._build_optimizer`
makes (weight decay on matrices only). The three implementations take turns (round
robin, `--rounds` rounds; in each, a fresh copy of the weights and a fresh optimizer take
one warm-up step and `--steps` timed steps), so load from other processes falls on all of
them alike. Also checks that the three give the same parameters after the same steps (max
abs difference).

    nice -n 10 python benchmarks/adamw.py --out benchmarks/adamw.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KINDS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def load_params(model: str) -> list[Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from schemas.model_registry import resolve_model

    lm = AutoModelForCausalLM.from_pretrained(resolve_model(model).path, dtype=torch.float32)
    return [p.detach() for p in lm.parameters()]


def make_optimizer(params: list[Any], kind: str) -> Any:
    import torch

    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=5e-6, **KINDS[kind])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/adamw.json")
    args = parser.parse_args()
    base = load_params(args.model)
    torch.manual_seed(0)
    grads = [torch.randn_like(p) * 1e-3 for p in base]
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    copies: dict[str, list[Any]] = {}

    def run(kind: str) -> list[Any]:
        """A fresh copy of the weights and a fresh optimizer: 1 warm-up + `steps` timed
        steps (one kind's state in memory at a time)."""
        params = [p.clone().requires_grad_(True) for p in base]
        optimizer = make_optimizer(params, kind)
        for i in range(args.steps + 1):
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            start = time.perf_counter()
            optimizer.step()
            if i:
                times[kind].append(time.perf_counter() - start)
        return [p.detach() for p in params]

    for _ in range(args.rounds):
        for kind in KINDS:
            copies[kind] = run(kind)
    ref = copies["for-loop"]
    rows = []
    for kind in KINDS:
        diff = max(float((a - b).abs().max()) for a, b in zip(copies[kind], ref, strict=True))
        rows.append(
            {
                "kind": kind,
                "median_s": statistics.median(times[kind]),
                "min_s": min(times[kind]),
                "max_s": max(times[kind]),
                "max_abs_diff_vs_for_loop": diff,
            }
        )
    params = sum(p.numel() for p in base)
    print(
        f"{args.model}: {params:,} parameters, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| AdamW | median s / step | min | max | max abs diff vs for-loop |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | "
            f"{r['max_abs_diff_vs_for_loop']:.2e} |"
        )
    report = {
        "model": args.model,
        "parameters": params,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps_timed": args.rounds * args.steps,
        "table": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

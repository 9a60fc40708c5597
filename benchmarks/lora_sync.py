"""vLLM rollouts of a LoRA student: merged weights pushed at each sync (what `raft-distill
fit` does with `train.lora` and `rollout.engine: vllm`) vs vLLM's own LoRA support (the
adapter saved at each sync and served with a new `LoRARequest`).

Each mode runs in a fresh process on the real student (SmolLM2-135M-Instruct by default)
with peft adapters (`train.lora` defaults: r 16, alpha 32, all-linear). Before each sync the
adapters get new values (a stand-in for an optimizer step); then
- merged: `lora.merged_parameters` (W + alpha/r B A, every adapted layer) and
  `VLLMRollout.sync_weights` (vLLM's in-place `reload_weights`);
- adapter: `save_pretrained` of the adapters into a new folder; the rollout passes
  `LoRARequest(name, new id, folder)`, so vLLM loads it on first use (inside the rollout).
Rollouts are greedy on the same prompts, so the two modes must produce the same tokens up to
float error; the share of identical trajectories is reported as a check. Prints a table
(sync s, rollout s, per step, tok/s) and writes JSON; the first sync (engine warm-up) is
left out of the means.

    python benchmarks/lora_sync.py --syncs 4 --prompts 32 --max-new-tokens 48 --out runs/bench/lora_sync.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _prompts(tokenizer: Any, data: Path, n: int) -> list[list[int]]:
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()][:n]
    return [
        tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], add_generation_prompt=True,
                                                tokenize=False), add_special_tokens=False)["input_ids"]
        for r in rows
    ]


def _perturb(peft_model: Any, step: int, std: float) -> None:
    """New adapter values, as after an optimizer step (B is zero at init: the first step
    already makes W + delta differ from W)."""
    import torch

    gen = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raft_distill import lora
    from raft_distill.config import LoraConfig, RolloutConfig
    from raft_distill.vllm_engine import cpu_defaults, shutdown
    from schemas.model_registry import resolve_model

    path = resolve_model(args.model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = _prompts(tokenizer, Path(args.data), args.prompts)
    eos = {tokenizer.eos_token_id}
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_model = lora.add_adapters(lm, LoraConfig(r=args.rank, alpha=2 * args.rank), seed=0)
    cfg = RolloutConfig(engine="vllm", temperature=0.0, max_new_tokens=args.max_new_tokens, vllm_max_model_len=args.max_model_len)
    steps: list[dict[str, Any]] = []
    outputs: list[list[list[int]]] = []
    t_start = time.perf_counter()
    if args.mode == "merged":
        from raft_distill.rollout_vllm import VLLMRollout

        engine = VLLMRollout(path, cfg, seed=0)
        start_s = time.perf_counter() - t_start
        for step in range(args.syncs):
            _perturb(peft_model, step, args.delta_std)
            t0 = time.perf_counter()
            engine.sync_weights(lora.merged_parameters(peft_model))
            sync_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            outs = engine.sample(prompts, eos, seed=step)
            steps.append({"sync_s": sync_s, "rollout_s": time.perf_counter() - t0, "tokens": sum(map(len, outs))})
            outputs.append(outs)
        engine.close()
    else:
        from vllm import LLM, SamplingParams, TokensPrompt
        from vllm.lora.request import LoRARequest

        llm = LLM(
            model=str(path), dtype="float32", seed=0, max_model_len=args.max_model_len, enforce_eager=True,
            enable_lora=True, max_lora_rank=args.rank, max_loras=1, **cpu_defaults(args.max_model_len),
        )
        start_s = time.perf_counter() - t_start
        params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, stop_token_ids=sorted(eos), detokenize=False)
        requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        with tempfile.TemporaryDirectory() as tmp:
            for step in range(args.syncs):
                _perturb(peft_model, step, args.delta_std)
                folder = Path(tmp) / f"step{step}"
                t0 = time.perf_counter()
                peft_model.save_pretrained(folder, safe_serialization=True)
                sync_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                result = llm.generate(requests, params, use_tqdm=False, lora_request=LoRARequest(f"step{step}", step + 1, str(folder)))
                rollout_s = time.perf_counter() - t0
                outs = [list(r.outputs[0].token_ids) for r in result]
                outs = [o[: o.index(next(iter(eos))) + 1] if next(iter(eos)) in o else o for o in outs]
                steps.append({"sync_s": sync_s, "rollout_s": rollout_s, "tokens": sum(map(len, outs))})
                outputs.append(outs)
        shutdown(llm)
    Path(args.child_out).write_text(json.dumps({"mode": args.mode, "engine_start_s": start_s, "steps": steps, "outputs": outputs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO / "data/demo/train.jsonl"))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--syncs", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--delta-std", type=float, default=0.002, help="std of the adapters' B values per sync")
    parser.add_argument("--modes", default="merged,adapter")
    parser.add_argument("--out", default="runs/bench/lora_sync.json")
    parser.add_argument("--child-mode", dest="mode", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return

    results: dict[str, Any] = {}
    for mode in [m for m in args.modes.split(",") if m]:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        cmd = [sys.executable, __file__, "--child-mode", mode, "--child-out", str(out)]
        for key in ("model", "data", "prompts", "max_new_tokens", "max_model_len", "syncs", "rank", "delta_std"):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            results[mode] = {"error": proc.stderr[-3000:], "wall_s": wall}
            print(f"{mode}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        results[mode] = {**json.loads(out.read_text()), "wall_s": wall}

    print(f"\nLoRA rollouts on vLLM: {args.prompts} prompts x <= {args.max_new_tokens} tokens, greedy, r {args.rank}, "
          f"{args.syncs} syncs (means leave out the first)")
    print(f"{'mode':<10}{'sync s':>9}{'rollout s':>11}{'step s':>9}{'rollout tok/s':>15}{'engine start s':>16}")
    table = []
    for mode, res in results.items():
        if "error" in res:
            table.append({"mode": mode, "status": "failed"})
            continue
        later = res["steps"][1:] or res["steps"]
        sync = statistics.mean(s["sync_s"] for s in later)
        roll = statistics.mean(s["rollout_s"] for s in later)
        tps = statistics.mean(s["tokens"] / s["rollout_s"] for s in later)
        table.append({"mode": mode, "sync_s": sync, "rollout_s": roll, "step_s": sync + roll, "rollout_tok_s": tps,
                      "engine_start_s": res["engine_start_s"], "status": "ok"})
        print(f"{mode:<10}{sync:>9.3f}{roll:>11.2f}{sync + roll:>9.2f}{tps:>15.1f}{res['engine_start_s']:>16.1f}")
    same = None
    if all(m in results and "outputs" in results[m] for m in ("merged", "adapter")):
        pairs = [(a, b) for sa, sb in zip(results["merged"]["outputs"], results["adapter"]["outputs"], strict=True)
                 for a, b in zip(sa, sb, strict=True)]
        same = sum(a == b for a, b in pairs) / len(pairs)
        print(f"identical greedy trajectories, merged vs adapter: {100 * same:.1f}% of {len(pairs)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for res in results.values():
        res.pop("outputs", None)
    out.write_text(json.dumps({
        "benchmark": "lora_sync", "settings": {k: v for k, v in vars(args).items() if k not in ("mode", "child_out")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "table": table, "identical_trajectories": same, "raw": results,
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

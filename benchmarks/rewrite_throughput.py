"""Rewrite-stage throughput vs bare vLLM `generate` vs bare HF `generate`, same prompts.

Prints a table (generated tokens/s and ratios) and writes JSON. Target: the stage runs at
>= 0.95x bare vLLM (the stage adds prompt rendering, the call cache and bookkeeping).

--engine-core both runs the vLLM rows twice, side by side, each in a fresh process: with
vLLM's engine core in a separate process (`VLLM_ENABLE_V1_MULTIPROCESSING=1`, vLLM's own
default) and in this process (`=0`, raft-data's CPU default: a separate core busy-polls one
of few CPU cores). It reports each run's engine start and whole-process seconds too.

    python benchmarks/rewrite_throughput.py --rows 64 --max-new-tokens 64 --out runs/bench/rewrite.json
    python benchmarks/rewrite_throughput.py --rows 128 --max-new-tokens 96 --engines vllm --engine-core both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="data/demo/train.jsonl")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="HF generate batch")
    parser.add_argument("--engines", default="vllm,transformers")
    parser.add_argument("--engine-core", choices=["default", "in-process", "separate", "both"], default="default",
                        help="where vLLM's engine core runs; both: one fresh process each, side by side")
    parser.add_argument("--out", default="runs/bench/rewrite_throughput.json")
    args = parser.parse_args()
    if args.engine_core == "both":
        side_by_side(args)
        return
    if args.engine_core != "default":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if args.engine_core == "in-process" else "1"
    t_start = time.perf_counter()

    from raft_data.backends import TransformersBackend, VLLMBackend, vllm_available
    from raft_data.cache import CallCache
    from raft_data.config import BackendConfig, InputConfig, RewriteConfig, SamplingConfig
    from raft_data.load import load_input
    from raft_data.rewrite import rewrite, rewrite_prompt_ids
    from raft_data.seeds import request_seed
    from schemas.manifest import StageTiming
    from schemas.model_registry import resolve_model

    records = load_input(InputConfig(path=args.data, limit=args.rows)).records
    # Greedy on the same token ids; engines may stop at EOS at different points, so compare rates.
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    rcfg = RewriteConfig(sampling=sampling)
    model = resolve_model(args.model)
    engines = [e for e in args.engines.split(",") if e]
    rows: list[dict[str, object]] = []

    def record(name: str, seconds: float, tokens: int) -> None:
        rows.append({"what": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})

    if "vllm" in engines and vllm_available():
        from vllm import SamplingParams, TokensPrompt

        t0 = time.perf_counter()
        backend = VLLMBackend(model, BackendConfig(engine="vllm"))
        engine_start = time.perf_counter() - t0
        prompts = [rewrite_prompt_ids(backend.tokenizer, r, rcfg) for r in records]
        seeds = [request_seed(0, "rewrite", r.id, 0) for r in records]
        params = [SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, seed=s) for s in seeds]
        backend.llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], params[0], use_tqdm=False)  # warm-up
        t0 = time.perf_counter()
        outs = backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        record("bare vLLM generate", time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in outs))
        with tempfile.TemporaryDirectory() as tmp:
            cache = CallCache(Path(tmp) / "c.sqlite")
            timing = StageTiming()
            t0 = time.perf_counter()
            rewrite(backend, cache, records, rcfg, timing)
            record("rewrite stage (vLLM)", time.perf_counter() - t0, timing.generated_tokens)
        rows[-1]["engine_start_s"] = engine_start
        rows[-1]["engine_core"] = backend.info.engine_core
        del backend
    elif "vllm" in engines:
        print("vLLM is not installed: skipping its rows")

    if "transformers" in engines:
        hf = TransformersBackend(model, BackendConfig(engine="transformers", batch_size=args.batch_size))
        prompts = [rewrite_prompt_ids(hf.tokenizer, r, rcfg) for r in records]
        hf.generate(prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0), [0, 1])  # warm-up
        t0 = time.perf_counter()
        tokens = 0
        for start in range(0, len(prompts), args.batch_size):
            outs = hf.generate(prompts[start : start + args.batch_size], sampling, [0] * len(prompts[start : start + args.batch_size]))
            tokens += sum(o.tokens for o in outs)
        record(f"bare HF generate (batch {args.batch_size})", time.perf_counter() - t0, tokens)
        with tempfile.TemporaryDirectory() as tmp:
            cache = CallCache(Path(tmp) / "c.sqlite")
            timing = StageTiming()
            t0 = time.perf_counter()
            rewrite(hf, cache, records, rcfg, timing)
            record("rewrite stage (HF)", time.perf_counter() - t0, timing.generated_tokens)

    base = {r["what"]: r["tokens_per_s"] for r in rows}
    vllm_base = base.get("bare vLLM generate")
    hf_base = next((v for k, v in base.items() if k.startswith("bare HF")), None)
    print(f"\nrewrite throughput: {len(records)} prompts, {args.max_new_tokens} max new tokens, greedy, model {model.model_id}")
    print(f"{'what':<32}{'seconds':>9}{'tokens':>8}{'tok/s':>9}{'vs vLLM':>9}{'vs HF':>8}")
    for r in rows:
        tps = float(r["tokens_per_s"])  # type: ignore[arg-type]
        rv = f"{tps / vllm_base:.2f}x" if vllm_base else "-"
        rh = f"{tps / hf_base:.2f}x" if hf_base else "-"
        r["vs_bare_vllm"] = tps / vllm_base if vllm_base else None
        r["vs_bare_hf"] = tps / hf_base if hf_base else None
        print(f"{r['what']:<32}{float(r['seconds']):>9.1f}{int(r['tokens']):>8}{tps:>9.1f}{rv:>9}{rh:>8}")  # type: ignore[arg-type]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "rewrite_throughput",
        "rows": len(records),
        "max_new_tokens": args.max_new_tokens,
        "model": model.model_id,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "engine_core": args.engine_core,
        "process_seconds": time.perf_counter() - t_start,
        "results": rows,
    }, indent=2))
    print(f"wrote {out}")


def side_by_side(args: argparse.Namespace) -> None:
    """The vLLM rows with the engine core in a separate process, then in this process."""
    runs = []
    for core in ("separate", "in-process"):
        out = Path(args.out).with_suffix(f".{core}.json")
        cmd = [sys.executable, __file__, "--model", args.model, "--data", args.data, "--rows", str(args.rows),
               "--max-new-tokens", str(args.max_new_tokens), "--engines", "vllm", "--engine-core", core, "--out", str(out)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        result = json.loads(out.read_text())
        runs.append({"engine_core": core, "wall_s": wall, "results": result["results"]})
    print(f"\nengine core side by side: {args.rows} prompts, {args.max_new_tokens} max new tokens, greedy")
    print(f"{'engine core':<12}{'what':<24}{'tok/s':>9}{'vs separate':>13}{'engine start s':>16}{'process wall s':>16}")
    ref = {r["what"]: r["tokens_per_s"] for r in runs[0]["results"]}
    for run in runs:
        for r in run["results"]:
            ratio = r["tokens_per_s"] / ref[r["what"]]
            start = r.get("engine_start_s")
            print(f"{run['engine_core']:<12}{r['what']:<24}{r['tokens_per_s']:>9.1f}{ratio:>12.2f}x"
                  f"{(f'{start:.1f}' if start is not None else '-'):>16}{run['wall_s']:>16.1f}")
            r["vs_separate"] = ratio
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "rewrite_throughput_engine_core",
        "rows": args.rows,
        "max_new_tokens": args.max_new_tokens,
        "model": args.model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": runs,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

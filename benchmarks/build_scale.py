"""Stage 1 at scale: `raft-data build` throughput (rows/s) and peak RSS vs input size and
worker count.

Each build runs in its own subprocess (`raft_data.build.build`, the CLI's code path), so
peak RSS (`ru_maxrss`) is per build; with --workers 2 both workers start together, each
with `worker=(i, 2)`, and the last one to finish writes the manifest (the finalize step),
as two GPUs or a SLURM array would. rows/s = input rows / wall seconds from the first
start to the last exit, model loading included; rows per CPU second (user + system, summed
over workers) is the figure a shared machine cannot distort as much. Each worker runs with
--threads torch threads (default 1), so 2 workers use 2 cores and 1 worker one.

The model is a 2-layer random-weight Llama with SmolLM2's tokenizer (tests/tiny_llama.py)
on the transformers engine (no vLLM): it measures the pipeline around the model (loading,
prompts, cache, embedder, checks, Parquet), not a model. Filters are opened up (tau -1, the
fact and answer checks off) so that every row goes through fusion and the judge, the
worst case; generations are short (rewrite 16, fusion 8, judge 4 tokens).

--fast-models swaps in cheaper models for the same pipeline, to reach 100k rows on a small
machine: the tiny Llama gets a 512-token byte-level BPE vocabulary trained on the synthetic
rows (SmolLM2's chat template and special tokens kept), so the NLL pass and each decoding
step no longer compute 49,152 logits per token, and the filter's embedder is a random
1-layer BERT (hidden 32) with all-MiniLM's tokenizer. Memory that grows with the input
does not depend on the models; only the constant part (weights) shrinks.

    python benchmarks/build_scale.py --rows 1000,10000 --workers 1,2 --out /tmp/build_scale.json
    python benchmarks/build_scale.py --load-only --rows 1000,10000,100000 --out /tmp/load_scale.json
    python benchmarks/build_scale.py --fast-models --rows 1000,100000 --workers 2 --out /tmp/rss_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUBJECTS = ["element", "planet", "enzyme", "river", "theorem", "protein", "mineral", "alloy"]


def write_input(path: Path, rows: int) -> None:
    with path.open("w") as handle:
        for i in range(rows):
            subject = SUBJECTS[i % len(SUBJECTS)]
            question = f"What is the defining property of {subject} number {i}, and why does it matter?"
            answer = f"The {subject} number {i} is defined by property {i % 97}; it matters because {i % 13} depends on it."
            handle.write(json.dumps({"question": question, "answer": answer}) + "\n")


def make_fast_models(work: Path, smollm2: Path, embedder: Path) -> tuple[Path, Path]:
    """(model, embedder) folders: a tiny Llama with a 512-token vocabulary, a tiny BERT."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

    from tests.tiny_llama import make_tiny_llama

    model, tiny_embedder = work / "fast-llama", work / "fast-embedder"
    if not (model / "config.json").exists():
        base = AutoTokenizer.from_pretrained(smollm2)
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        texts = [f"What is the defining property of {s} number {i}? The {s} is defined by property {i}; it matters."
                 for i in range(200) for s in SUBJECTS]
        bpe.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                       pad_token="<|im_end|>")
        fast.chat_template = base.chat_template
        vocab_dir = work / "fast-tokenizer"
        fast.save_pretrained(vocab_dir)
        make_tiny_llama(model, vocab_dir, seed=0)
    if not (tiny_embedder / "modules.json").exists():
        bert = work / "fast-bert"
        tok = AutoTokenizer.from_pretrained(embedder)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512)).save_pretrained(bert)
        tok.save_pretrained(bert)
        word = st_models.Transformer(str(bert), max_seq_length=256)
        SentenceTransformer(modules=[word, st_models.Pooling(32, "mean")]).save(str(tiny_embedder))
    return model, tiny_embedder


def pipeline(data: Path, out: Path, model: Path, shard_size: int, batch: int, embedder: Path | None = None) -> dict[str, Any]:
    return {
        "name": "scale",
        "input": {"path": str(data), "domain": "bench"},
        "output": {"dir": str(out), "shard_size": shard_size},
        "model": str(model),
        "backend": {"engine": "transformers", "batch_size": batch},
        "rewrite": {"sampling": {"max_new_tokens": 16, "temperature": 0.8, "seed": 1}},
        "filter": {
            "tau": -1.0, "check_facts": False, "check_answer": False, "reject_truncated": False,
            "copy_threshold": 100, "repetition_threshold": 1.0,
            **({"embedder": str(embedder)} if embedder else {}),
        },
        "fusion": {"rounds": 1, "sampling": {"max_new_tokens": 8}, "judge_sampling": {"max_new_tokens": 4}},
    }


def child(args: argparse.Namespace) -> None:
    """One build process: build, then report peak RSS and what it did."""
    import logging

    from raft_data.build import build
    from raft_data.config import PipelineConfig

    logging.basicConfig(level=logging.WARNING)
    cfg = PipelineConfig.model_validate(json.loads(Path(args.config).read_text()))
    if args.worker == "load":
        load_only(cfg, args.child_out)
        return
    worker = tuple(int(x) for x in args.worker.split("/")) if args.worker else None
    started = time.perf_counter()
    result = build(cfg, worker=worker)  # type: ignore[arg-type]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report: dict[str, Any] = {
        "seconds": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "shards_done": result.shards_done,
        "finalized": result.manifest is not None,
    }
    if result.manifest is not None:
        report["timings"] = {k: v.model_dump() for k, v in result.manifest.timings.items()}
        report["rows_in"] = result.manifest.counts.rows_in
    Path(args.child_out).write_text(json.dumps(report))


def load_only(cfg: Any, child_out: str) -> None:
    """Only what grows with the input before any model runs: read, validate, length-check,
    as a build does (`scan_input`, streamed for JSONL) or with --whole as before streaming
    (`check_lengths(load_input(...))`, every row in memory)."""
    from raft_data.load import check_lengths, load_input, scan_input

    started = time.perf_counter()
    whole = os.environ.get("BUILD_SCALE_WHOLE") == "1"
    loaded = check_lengths(load_input(cfg.input), cfg) if whole else scan_input(cfg)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(child_out).write_text(json.dumps({
        "seconds": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0, "records": loaded.count, "whole": whole,
    }))


def run_build(config: Path, workers: int, threads: int, load: bool = False) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    procs, outs, logs = [], [], []
    started = time.perf_counter()
    for i in range(workers):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        cmd = [sys.executable, __file__, "--child-config", str(config), "--child-out", str(out)]
        if load:
            cmd += ["--child-worker", "load"]
        elif workers > 1:
            cmd += ["--child-worker", f"{i}/{workers}"]
        # stderr to a file, not a pipe: a worker whose pipe nobody reads (the parent waits on
        # another) blocks once ~64 KB of progress bars fill it, serialising the workers
        log_file = tempfile.TemporaryFile(mode="w+")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True))
        outs.append(out)
        logs.append(log_file)
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - started
    reports = []
    for proc, out, log_file in zip(procs, outs, logs, strict=True):
        log_file.seek(0)
        err = log_file.read()
        log_file.close()
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {err[-2000:]}", "wall_s": wall}
        reports.append(json.loads(out.read_text()))
    return {"wall_s": wall, "workers": reports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000,10000", help="input sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32, help="backend.batch_size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (OMP_NUM_THREADS)")
    parser.add_argument(
        "--load-only", action="store_true",
        help="measure only reading + validating + length-checking the input (no model calls)",
    )
    parser.add_argument("--whole", action="store_true", help="with --load-only: read the input whole (before streaming)")
    parser.add_argument("--fast-models", action="store_true",
                        help="a 512-token-vocabulary tiny Llama and a tiny BERT embedder (see above)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--out", default="benchmarks/build_scale.json")
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole:
        os.environ["BUILD_SCALE_WHOLE"] = "1"  # read by the children
    if args.child_config:
        child(argparse.Namespace(config=args.child_config, child_out=args.child_out, worker=args.child_worker))
        return
    rows_table, raw = measure(args)
    print_table(rows_table)
    import torch

    report = {
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "engine": "transformers (tiny random-weight Llama, 2 layers, hidden 32"
        + (", 512-token vocabulary; tiny random BERT embedder)" if args.fast_models else ")"),
        "note": "wall_s includes time the process was paused or starved by other jobs; cpu_s does not",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "table": rows_table,
        "raw": raw,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from schemas.model_registry import resolve_model
    from tests.tiny_llama import make_tiny_llama

    work = Path(args.work or tempfile.mkdtemp(prefix="build_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny-llama"
    embedder: Path | None = None
    if args.fast_models:
        model, embedder = make_fast_models(work, resolve_model("smollm2-135m-instruct").path,
                                           resolve_model("all-minilm-l6-v2").path)
    elif not (model / "config.json").exists():
        make_tiny_llama(model, resolve_model("smollm2-135m-instruct").path, seed=0)
    table, raw = [], {}
    for rows in [int(r) for r in args.rows.split(",")]:
        data = work / f"in-{rows}.jsonl"
        write_input(data, rows)
        for workers in [1] if args.load_only else [int(w) for w in args.workers.split(",")]:
            name = f"{rows}-load" if args.load_only else f"{rows}x{workers}"
            config = work / f"{name}.json"
            config.write_text(json.dumps(pipeline(data, work / f"out-{name}", model, args.shard_size, args.batch, embedder)))
            if args.load_only:
                result = run_build(config, 1, args.threads, load=True)
            else:
                result = run_build(config, workers, args.threads)
            raw[name] = result
            table.append(summarise(rows, 0 if args.load_only else workers, result))
            print(f"[{name}] {table[-1]}", file=sys.stderr)
    return table, raw


def summarise(rows: int, workers: int, result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        return {"rows": rows, "workers": workers, "status": result["error"][:300]}
    peaks = [w["peak_rss_mb"] for w in result["workers"]]
    cpu = sum(w["cpu_s"] for w in result["workers"])
    return {
        "rows": rows,
        "workers": workers,  # 0: --load-only
        "wall_s": round(result["wall_s"], 1),
        "rows_per_s": round(rows / result["wall_s"], 2),
        "cpu_s": round(cpu, 1),
        "rows_per_cpu_s": round(rows / cpu, 2),
        "peak_rss_mb": round(max(peaks), 1),
        "status": "ok",
    }


def print_table(table: list[dict[str, Any]]) -> None:
    header = ["rows", "workers", "wall_s", "rows_per_s", "cpu_s", "rows_per_cpu_s", "peak_rss_mb"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in table:
        if row.get("status") != "ok":
            print(f"{row['rows']} | {row['workers']} | not run: {row['status']}")
            continue
        print(" | ".join(str(row[h]) for h in header))


if __name__ == "__main__":
    main()

"""Stage-2 step memory and time at large vocabularies and long sequences (issue 11).

The variants of `benchmarks/distill_step.py` (raft_distill, raft_distill_lora, naive
full-vocab, TRL DistillationTrainer), each in its own subprocess, on random-weight
Llama-shaped models whose embedding and lm_head have a real large vocabulary (128,256 ids as
Llama 3, 151,936 as Qwen 2.5) but a tiny body (hidden 64, 2 layers by default), so that the
vocabulary-dependent part of a step dominates, as it does for a 1-3B student. The
tokenizer is SmolLM2's (49,152 ids); the other rows are never produced by the tokenizer,
but they are sampled, scored and trained like any others: the cost depends on the matrix.

Shapes: the trajectory z (sampled, `rollout.max_new_tokens`) and the SFT target y^ are both
`length` tokens. Each case runs 1 warm-up + `--steps` timed steps (default 1: the second
step is the first with AdamW state, gradients and activations alive together, so it holds
the peak). A parent watchdog reads each child's RSS every 10 ms and kills it above
`--cap-gb`; the case is recorded "OOM at cap X GB", not dropped. Results are appended to a
JSONL file case by case (a rerun skips the cases already there); `--report` writes the
table (Markdown) and the plots from it.

    nice -n 10 python benchmarks/distill_scale.py --out benchmarks/distill_scale.jsonl
    python benchmarks/distill_scale.py --out benchmarks/distill_scale.jsonl --report docs/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import distill_step  # noqa: E402  (the variants' code, shared)

VARIANTS = ["raft_distill", "raft_distill_lora", "naive", "trl"]
# (vocab, batch, length): batch 1 over all lengths at 128k, 152k at 4k, batch 4 at one length;
# in order of importance (a run stopped early has the cases that matter most)
DEFAULT_CASES = [
    *((128256, 1, n) for n in (4096, 1024, 2048, 512)),  # the >= 4k target first
    (151936, 1, 4096),
    (128256, 4, 512),
    (128256, 1, 8192),
]
SENTENCE = "The element iron has atomic number 26 and forms rust when it reacts with oxygen. "


# Real bodies for the GPU table (issue 11): Llama 3.2 3B and Llama 3.1 8B, random weights
BODIES: dict[str, dict[str, Any]] = {
    "llama3-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}


def body_config(hidden: int, layers: int, body: str | None) -> dict[str, Any]:
    """The LlamaConfig body: a named real shape (BODIES), or the tiny hidden x layers one."""
    if body:
        return dict(BODIES[body])
    return dict(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        tie_word_embeddings=False,
    )


def make_model(
    folder: Path, vocab: int, hidden: int, layers: int, tokenizer: str, body: str | None = None
) -> Path:
    """A random-weight Llama (untied head, as Llama 3 8B, unless `body` says otherwise) with
    `tokenizer`'s files (SmolLM2's by default). Built on the GPU when there is one and saved
    in bf16, so an 8B body takes seconds, not minutes."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from schemas.model_registry import resolve_model

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer).path)
    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=32768,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **body_config(hidden, layers, body),
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if body:
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return folder


def write_long_data(folder: Path, batch: int, length: int, tokenizer: str) -> Path:
    """Rows whose SFT target y^ is `length` tokens (a sentence repeated, then cut)."""
    from transformers import AutoTokenizer

    from schemas.model_registry import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer).path)
    ids = tok(SENTENCE * (length // 10 + 2), add_special_tokens=False)["input_ids"][: length - 1]
    answer = tok.decode(ids)
    pairs = [(f"Tell me everything about iron, part {i}.", answer) for i in range(max(batch, 4))]
    return distill_step.write_data(folder, batch, pairs)


def random_trajectories(prompts: list[Any], length: int, vocab: int, seed: int) -> list[list[int]]:
    """`length` random token ids per prompt (ids 3.. : never SmolLM2's eos/pad/bos)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (length,), generator=gen).tolist() for _ in prompts]


def stub_rollouts(length: int) -> None:
    """Replace the rollout (HF generate) of every variant by random ids of `length` tokens:
    the rollout is the same code for raft_distill and naive (and vLLM on a GPU), not what
    differs between the variants, and at 4k tokens on a loaded 2-core CPU it would take
    most of the benchmark's time. The trained step sees z of exactly `length` tokens."""
    from raft_distill import rollout

    calls = iter(range(10**6))

    def fake(model: Any, prompts: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        return random_trajectories(prompts, length, model.config.vocab_size, next(calls))

    rollout.sample_trajectories = fake  # type: ignore[assignment]
    try:
        from trl.trainer.distillation_trainer import DistillationTrainer
    except Exception:  # noqa: BLE001 - TRL absent: run_trl records why
        return

    def fake_trl(
        self: Any, prompt_ids: list[list[int]], *args: Any, **kwargs: Any
    ) -> list[list[int]]:
        return random_trajectories(prompt_ids, length, self.model.config.vocab_size, next(calls))

    DistillationTrainer._generate_single_turn = fake_trl  # type: ignore[method-assign]


@contextlib.contextmanager
def profiled(args: argparse.Namespace) -> Iterator[None]:
    """--profile DIR: torch.profiler over the variant's steps (warm-up included); writes the
    ops by self time (the GPU's when there is one) and, for raft_distill, its phases
    (`raft_distill.<phase>` ranges: rollout, teacher, student, optimizer)."""
    if not args.profile:
        yield
        return
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        yield
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    name = f"{args.variant}-{Path(args.model).name}-b{args.batch}-L{args.length}"  # model: vocab, body
    if args.logit_chunk:
        name += f"-chunk{args.logit_chunk}"
    if args.tf32:
        name += f"-tf32{args.tf32}"
    folder = Path(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(
        prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)
    )


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    if args.stub_rollout:
        stub_rollouts(args.length)
    work = Path(tempfile.mkdtemp(prefix="distill-scale-"))
    data = write_long_data(work / "data", args.batch, args.length, args.tokenizer)
    args.new_tokens = args.length
    args.target_tokens = args.length
    try:
        with profiled(args):
            result = distill_step.RUNNERS[args.variant](args, args.model, data, work)
    except (MemoryError, torch.OutOfMemoryError) as err:  # host RAM, or the GPU's
        result = {"error": f"{type(err).__name__}: {str(err)[:300]}", "oom": True}
    except Exception as err:  # noqa: BLE001 - report the failure in the table, not hide it
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    result["peak_memory_mb"] = distill_step.peak_mb()
    Path(args.child_out).write_text(json.dumps(result))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def run_capped(cmd: list[str], cap_mb: float) -> tuple[int, float, bool, str]:
    """Run `cmd`, killing it when its RSS passes `cap_mb`; (exit code, max RSS seen,
    killed at the cap, stderr tail)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        seen, killed = 0.0, False
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            seen = max(seen, rss)
            if rss > cap_mb:
                proc.send_signal(signal.SIGKILL)
                killed = True
                proc.wait()
                break
            time.sleep(0.01)
        err.seek(0)
        return proc.returncode, seen, killed, err.read()[-3000:]


def run_case(
    args: argparse.Namespace, model: Path, vocab: int, batch: int, length: int, variant: str
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        child_out = handle.name
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--child-out",
        child_out,
        "--model",
        str(model),
        "--batch",
        str(batch),
        "--length",
        str(length),
        "--steps",
        str(args.steps),
        "--top-k",
        str(args.top_k),
        "--tokenizer",
        args.tokenizer,
        "--stub-rollout" if args.stub_rollout else "--no-stub-rollout",
    ]
    if args.tf32:
        cmd += ["--tf32", args.tf32]
    if args.logit_chunk:
        cmd += ["--logit-chunk", str(args.logit_chunk)]
    if args.profile:
        cmd += ["--profile", args.profile]
    started = time.perf_counter()
    code, seen, killed, stderr = run_capped(cmd, args.cap_gb * 1024)
    wall = time.perf_counter() - started
    case = {
        "vocab": vocab,
        "batch": batch,
        "length": length,
        "variant": variant,
        "hidden": args.hidden,
        "layers": args.layers,
        "body": args.body or f"hidden {args.hidden}, {args.layers} layers",
        "device": "cuda" if _cuda() else "cpu",
        "wall_s": wall,
        "stub_rollout": args.stub_rollout,
        "watchdog_max_rss_mb": seen,
        "cap_gb": args.cap_gb,
        "tf32": args.tf32,  # None: torch's default (off)
        "logit_chunk": args.logit_chunk,  # None: loss.logit_chunk_size's default (64)
    }
    if killed:
        case["status"] = f"OOM at cap {args.cap_gb:g} GB"
        return case
    try:
        result = json.loads(Path(child_out).read_text())
    except (OSError, json.JSONDecodeError):
        case["status"] = f"child exited {code}: {stderr[-500:]}"
        return case
    row = distill_step.summarise(variant, result)
    if result.get("oom"):
        where = "GPU" if case["device"] == "cuda" else f"MemoryError under cap {args.cap_gb:g} GB"
        row["status"] = f"OOM ({where})"
        row["peak_memory_mb"] = result.get("peak_memory_mb")
    steps = result.get("steps") or []
    if steps and all(s.get("rollout_s") is not None for s in steps):
        train_s = sum(s["step_s"] - s["rollout_s"] for s in steps) / len(steps)
        row["ms_per_trained_token_no_rollout"] = 1000 * train_s / row["trained_tokens"]
    case.update(row)
    case["raw"] = result
    return case


def measure(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            body = r.get("body") or f"hidden {r['hidden']}, {r['layers']} layers"
            done.add((body, r["vocab"], r["batch"], r["length"], r["variant"], r.get("tf32"), r.get("logit_chunk")))
    models = Path(args.models or tempfile.gettempdir()) / "distill-scale-models"
    variants = args.variants.split(",")
    for vocab, batch, length in parse_cases(args.cases):
        name = args.body or f"h{args.hidden}-l{args.layers}"
        model = make_model(
            models / f"llama-v{vocab}-{name}",
            vocab,
            args.hidden,
            args.layers,
            args.tokenizer,
            args.body,
        )
        body = args.body or f"hidden {args.hidden}, {args.layers} layers"
        for variant in variants:
            if (body, vocab, batch, length, variant, args.tf32, args.logit_chunk) in done:
                continue
            case = run_case(args, model, vocab, batch, length, variant)
            print(
                f"[{variant} v{vocab} b{batch} L{length}] {case['wall_s']:.0f}s: "
                f"{case.get('status')} peak {case.get('peak_memory_mb') or case['watchdog_max_rss_mb']:.0f} MB "
                f"ms/tok {case.get('ms_per_trained_token')}",
                file=sys.stderr,
                flush=True,
            )
            with out.open("a") as handle:
                handle.write(json.dumps(case) + "\n")


def parse_cases(text: str | None) -> list[tuple[int, int, int]]:
    if not text:
        return list(DEFAULT_CASES)
    return [tuple(int(x) for x in c.split(":")) for c in text.split(",")]  # type: ignore[misc]


def load_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_gb(r: dict[str, Any]) -> float | None:
    return r["peak_memory_mb"] / 1024 if r.get("status") == "ok" else None


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| vocab | batch | length | variant | peak GB | ms / trained token | "
        "ms / token w/o rollout | step s | rollout s | trained tokens |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = []
    for r in sorted(
        rows, key=lambda r: (r["vocab"], r["batch"], r["length"], VARIANTS.index(r["variant"]))
    ):
        if r.get("status") != "ok":
            cells = [str(r["status"])[:60], "-", "-", "-", "-", "-"]
        else:
            cells = [
                fmt(peak_gb(r), ".2f"),
                fmt(r.get("ms_per_trained_token"), ".3g"),
                fmt(r.get("ms_per_trained_token_no_rollout"), ".3g"),
                fmt(r.get("step_s"), ".3g"),
                fmt(r.get("rollout_s"), ".1f"),
                fmt(r.get("trained_tokens"), ".0f"),
            ]
        lines.append(
            f"| {r['vocab']:,} | {r['batch']} | {r['length']} | {r['variant']} | "
            + " | ".join(cells)
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def plot(
    rows: list[dict[str, Any]], folder: Path, vocab: int = 128256, batch: int = 1
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [r for r in rows if r["vocab"] == vocab and r["batch"] == batch]
    gpu = picked[0].get("device") == "cuda"
    peak_label = "GPU peak allocated (GB)" if gpu else "peak RSS (GB)"
    written = []
    for key, label, name in (
        ("peak", peak_label, "benchmarks_scale_memory.png"),
        ("ms_per_trained_token", "ms per trained token", "benchmarks_scale_time.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for variant in VARIANTS:
            pts = sorted(
                ((r["length"], r) for r in picked if r["variant"] == variant), key=lambda p: p[0]
            )
            ok = [
                (n, peak_gb(r) if key == "peak" else r.get(key))
                for n, r in pts
                if r.get("status") == "ok"
            ]
            if ok:
                ax.plot([n for n, _ in ok], [v for _, v in ok], marker="o", label=variant)
            ooms = [n for n, r in pts if "OOM" in str(r.get("status"))]
            if ooms and key == "peak":
                cap = picked[0]["cap_gb"]
                ax.scatter(ooms, [cap] * len(ooms), marker="x", s=80, color="red")
        if key == "peak" and not gpu:
            ax.axhline(picked[0]["cap_gb"], ls="--", color="red", lw=0.8, label="cap (x = OOM)")
        ax.set_xscale("log", base=2)
        if gpu:  # naive's GBs next to raft_distill's hundreds of MB
            ax.set_yscale("log")
        ax.set_xlabel("trajectory = target length (tokens), batch 1")
        ax.set_ylabel(label)
        shape = f"hidden {picked[0]['hidden']}, {picked[0]['layers']} layers"
        where = "one H200" if gpu else "CPU"
        ax.set_title(f"stage-2 step, vocab {vocab:,}, {shape} ({where})", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _ratio(at: dict[str, dict[str, Any]], other: str, what: str) -> str:
    """raft_distill's `what` (peak or a time key) over `other`'s, or why there is none."""
    rd, r = at["raft_distill"], at.get(other)
    if r is None:
        return f"{other} not measured"
    if r.get("status") != "ok":
        return f"{other}: {r.get('status')} (raft_distill ran)"
    a = peak_gb(rd) if what == "peak" else rd.get(what)
    b = peak_gb(r) if what == "peak" else r.get(what)
    return f"{a / b:.2f}x {other}" if a and b else "-"


def targets(rows: list[dict[str, Any]]) -> str:
    """Issue 11's targets at each measured case with vocab >= 128k and >= 4k tokens."""
    lines = []
    for key in sorted({(r["vocab"], r["batch"], r["length"]) for r in rows}):
        if key[0] < 128000 or key[2] < 4096:
            continue
        at = {r["variant"]: r for r in rows if (r["vocab"], r["batch"], r["length"]) == key}
        rd, lo = at.get("raft_distill"), at.get("raft_distill_lora")
        if rd is None or rd.get("status") != "ok":
            continue
        if lo is not None and lo.get("status") == "ok":
            lora = f"{peak_gb(lo) / peak_gb(rd):.2f}"  # type: ignore[operator]
        else:
            lora = str((lo or {}).get("status", "not measured"))
        lines.append(
            f"- vocab {key[0]:,}, batch {key[1]}, length {key[2]}: peak "
            f"{_ratio(at, 'trl', 'peak')} (target <= 0.5), {_ratio(at, 'naive', 'peak')} "
            f"(target <= 0.3); ms/token {_ratio(at, 'naive', 'ms_per_trained_token')} "
            f"(target <= 1); LoRA peak / full peak {lora} (target <= 0.5)"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="benchmarks/distill_scale.jsonl")
    parser.add_argument("--cases", help="vocab:batch:length,... (default: the issue-11 set)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--body", choices=sorted(BODIES), help="a real model body instead of --hidden/--layers"
    )
    parser.add_argument(
        "--tokenizer", default="smollm2-135m-instruct", help="model name or folder for the ids"
    )
    parser.add_argument("--models", help="folder for the random models (default: the temp dir)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up")
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--cap-gb", type=float, default=9.0, help="RSS cap per variant")
    parser.add_argument(
        "--stub-rollout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="z = random ids of --length tokens instead of HF generate (see stub_rollouts)",
    )
    parser.add_argument("--tf32", choices=["on", "off"], help="raft_distill variants: train.tf32 (default: unset)")
    parser.add_argument("--logit-chunk", type=int, help="raft_distill variants: loss.logit_chunk_size (default 64)")
    parser.add_argument(
        "--profile", help="folder: each case's torch.profiler op table (warm-up step included)"
    )
    parser.add_argument("--report", help="folder: write the table (stdout) and the plots")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        args.temperature, args.bf16, args.threads = 1.5, True, 0
        child(args)
    elif args.report:
        rows = load_rows(Path(args.out))
        print(table(rows))
        print(targets(rows))
        for path in plot(rows, Path(args.report)):
            print(f"wrote {path}")
    else:
        measure(args)


if __name__ == "__main__":
    main()

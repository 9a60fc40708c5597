"""RAFT's price over SFT: one `raft-distill fit` step in raft mode against one in sft mode,
same model, rows, batch and SFT targets, with the phases of each step (issue 22).

Each variant runs in its own subprocess (warm-up step, then `--steps` timed steps through
`raft_distill.step.train_step`) and the parent prints, per variant, the mean step time,
the phases (rollout, teacher, student SFT pass, student KL pass, optimizer; code before the
split reports one `student` phase), the trajectories' mean length and the share cut at the
token cap, and the step's ratio to the SFT step of the same code.

A variant is a name from VARIANTS (a set of dotted fit keys) with an optional `@<git ref>`:
`raft@HEAD~1` runs the raft variant on the code of that commit (its raft_distill, schemas
and raft_data extracted with `git archive` into a temporary folder that goes first on the
child's sys.path), so a change is timed side by side with the code before it in one run.
`--repeats` runs the whole list again (variants interleaved, so a load change hits all
of them); the table reports the median over repeats of each run's mean step.

Data: the question / answer pairs of a JSONL file (`--data medmcqa`: the replication's
long explanations; `--data demo`: the demo's short answers), the answer standing in for
y^ (stage 1's fused answer: same length scale). Fit settings: the replication's
(`pipelines/replicate_medmcqa.yaml` on `pipelines/distill_medmcqa.yaml`: batch 4, 96 new
tokens, top-512 KL at T 1.5, EMA lambda, AdamW at lr 5e-4, bf16 autocast).

    python benchmarks/raft_vs_sft.py --data medmcqa --variants sft,raft --out /tmp/rs.json
    python benchmarks/raft_vs_sft.py --data demo --variants sft,raft,sft@HEAD~1,raft@HEAD~1
    python benchmarks/raft_vs_sft.py --data medmcqa --student-ab 3     # separate vs joint
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("RAFT_BENCH_CODE") or REPO)  # the code a child runs (a ref's)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(CODE))

DATASETS = {"medmcqa": "data/medmcqa/train.jsonl", "demo": "data/demo/train.jsonl"}
PACKAGES = ("raft_distill", "schemas", "raft_data")

# dotted fit keys over the replication's settings (`fit_config` below)
VARIANTS: dict[str, dict[str, Any]] = {
    "sft": {"loss.mode": "sft"},
    "raft": {},
    "raft_vllm": {"rollout.engine": "vllm"},
    "raft_budget": {"rollout.target_length_factor": 1.5},  # opt-in: z <= 1.5 x |y^ + eos|
}
PHASES = ("rollout", "teacher", "student_sft", "student_kl", "student_joint", "student", "optimizer")


def write_data(source: Path, folder: Path) -> Path:
    """The JSONL's question / answer pairs as accepted RefinedRecords (answer = y^)."""
    from schemas import RefinedRecord, row_id, write_records

    records = []
    for i, line in enumerate(source.read_text().splitlines()):
        row = json.loads(line)
        q, a = row["question"], row["answer"]
        records.append(
            RefinedRecord(
                id=row_id("bench", q, a), question=q, gold_answer=a, domain="bench",
                source_file=source.name, source_row=i, decision="accepted", reason="bench",
                final_answer=a, final_source="fusion", teacher_context_tokens=0,
                over_length=False,
            )
        )
    write_records(folder / "data" / "train-00000.parquet", records, RefinedRecord)
    return folder


def fit_config(args: argparse.Namespace, data: Path, out: Path, keys: dict[str, Any]) -> Any:
    """The replication's fit settings, then the variant's keys, then `--set` keys."""
    from raft_distill.config import apply_overrides, config_from_dict

    raw: dict[str, Any] = {
        "data": {"path": str(data)},
        "model": {"student": args.model},
        "rollout": {"max_new_tokens": args.new_tokens, "temperature": 1.0, "top_p": 1.0},
        "loss": {"mode": "raft", "top_k": 512, "temperature": 1.5, "lambda": "ema"},
        "train": {
            "batch_size": args.batch, "max_steps": args.steps + 1, "lr": 5e-4,
            "lr_scheduler": "constant", "bf16": True, "output_dir": str(out),
            "progress": False, "seed": 0, "report_to": [],
        },
    }
    sets = [f"{k}={json.dumps(v)}" for k, v in keys.items()] + list(args.set or [])
    return config_from_dict(apply_overrides(raw, sets))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant: build the run, a warm-up step, `--steps` timed steps."""
    import torch

    import raft_distill
    from raft_distill import step, step_records
    from raft_distill.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":  # the step's phase timers read the process's CPU time instead
        cpu_clock = types.SimpleNamespace(perf_counter=time.process_time)
        step.time = step_records.time = cpu_clock  # type: ignore[assignment]
    name = args.variant.split("@")[0]
    work = Path(tempfile.mkdtemp(prefix="raft-vs-sft-"))
    data = write_data(REPO / DATASETS.get(args.data, args.data), work / "data")
    trainer = Trainer(fit_config(args, data, work / "run", VARIANTS[name]))
    trainer._prepare_output()
    trainer.model.train()
    rows = []
    for s in range(args.steps + 1):  # step 0: warm-up, not reported
        result = step.train_step(trainer.parts, s)
        counts = result.counts
        phases = dataclasses.asdict(result.times)
        phases["student"] = result.times.student  # a property since the passes were split
        rows.append(
            {
                "step_s": result.elapsed,
                **{f"{k}_s": v for k, v in phases.items()},
                "loss_sft": result.loss_sft,
                "loss_kl": result.loss_kl,
                "sft_tokens": counts.sft_tokens,
                "trajectory_tokens": counts.trajectory_tokens,
                "mean_z_len": counts.trajectory_tokens / counts.sequences if counts.sequences else 0.0,
                "cut_share": counts.cut / counts.sequences if counts.sequences else 0.0,
            }
        )
    trainer.close()
    return {
        "steps": rows[1:],
        "warmup": rows[0],
        "code": str(Path(raft_distill.__file__).parents[1]),
        "threads": torch.get_num_threads(),
    }


def student_ab(args: argparse.Namespace) -> None:
    """The student's passes alone, separate vs joint, alternated in one process on the same
    rows and trajectories (`--student-ab N`: the rows of steps 0..N-1, 3 rounds each; the
    weights do not change between rounds): the least seconds of each and their ratio."""
    import torch

    from raft_distill import step
    from raft_distill.step_records import StepTimes
    from raft_distill.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="raft-vs-sft-ab-"))
    data = write_data(REPO / DATASETS.get(args.data, args.data), work / "data")
    run = Trainer(fit_config(args, data, work / "run", VARIANTS["raft"])).parts
    run.model.train()
    for s in range(args.student_ab):
        examples = step.local_examples(run, s)
        z = step.rollout_trajectories(run, s, examples, StepTimes())
        counts = step.count_step(run, examples, z)
        best = {"separate": float("inf"), "joint": float("inf")}
        for _ in range(3):
            for how in best:
                times = StepTimes()
                if how == "joint":
                    step.joint_backward(run, [examples], z, counts, times)
                else:
                    step.sft_backward(run, [examples], counts.sft_tokens, times)
                    step.kl_backward(run, [examples], z, counts.sequences, times)
                best[how] = min(best[how], times.student)
                run.optimizer.zero_grad(set_to_none=True)
        lengths = [len(e.prompt_ids) + len(e.target_ids) + len(t) for e, t in zip(examples, z, strict=True)]
        print(f"step {s}: |x|+|y^|+|z| {lengths}: separate {best['separate']:.2f} s, joint "
              f"{best['joint']:.2f} s, joint/separate {best['joint'] / best['separate']:.3f}")


def extract(ref: str, into: Path) -> Path:
    """The packages as they are at git `ref`, in a folder of their own."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, *PACKAGES], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(args: argparse.Namespace, spec: str, codes: dict[str, Path]) -> dict[str, Any]:
    """A variant in its own process (with a ref's code when `spec` has `@ref`)."""
    ref = spec.split("@")[1] if "@" in spec else None
    env = dict(os.environ, RAFT_BENCH_CODE=str(codes[ref]) if ref else "")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    cmd = [sys.executable, __file__, "--variant", spec, "--child-out", str(out)]
    cmd += ["--data", args.data, "--model", args.model, "--batch", str(args.batch)]
    cmd += ["--new-tokens", str(args.new_tokens), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--clock", args.clock] + [f"--set={s}" for s in args.set or []]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError):
        result = {"error": f"child exited {proc.returncode}: {proc.stderr[-3000:]}"}
    result.update(wall_s=time.perf_counter() - started, load_before=load, load_after=os.getloadavg()[0])
    return result


def mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def summarise(spec: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of each run's mean step; phases and sizes from the same runs."""
    ok = [r for r in runs if r.get("steps")]
    if not ok:
        return {"variant": spec, "error": runs[0].get("error", "no steps")[-600:]}
    per_run = [mean(r["steps"], "step_s") or 0.0 for r in ok]
    row: dict[str, Any] = {"variant": spec, "step_s": statistics.median(per_run), "runs_s": per_run}
    steps = [s for r in ok for s in r["steps"]]
    for phase in PHASES:
        row[f"{phase}_s"] = mean(steps, f"{phase}_s")
    for key in ("mean_z_len", "cut_share", "sft_tokens", "loss_sft", "loss_kl"):
        row[key] = mean(steps, key)
    row["load"] = [round(r["load_before"], 2) for r in ok]
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each step's ratio to the sft step of the same code (`sft@ref`, else `sft`)."""
    by_spec = {r["variant"]: r for r in rows if "step_s" in r}
    for row in rows:
        ref = row["variant"].split("@")[1] if "@" in row["variant"] else None
        sft = by_spec.get(f"sft@{ref}" if ref else "sft") or by_spec.get("sft")
        if sft and "step_s" in row:
            row["ratio_to_sft"] = row["step_s"] / sft["step_s"]


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["variant", "step_s", "ratio_to_sft", *(f"{p}_s" for p in PHASES), "mean_z_len",
            "cut_share", "sft_tokens", "load"]
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for row in rows:
        if "error" in row:
            print(f"{row['variant']} | error: {row['error'][-300:]}")
        else:
            print(" | ".join(fmt(row.get(c)) for c in cols))


def parent(args: argparse.Namespace) -> None:
    specs = args.variants.split(",")
    for spec in specs:
        if spec.split("@")[0] not in VARIANTS:
            raise SystemExit(f"--variants: unknown {spec!r}; known: {', '.join(VARIANTS)}")
    work = Path(tempfile.mkdtemp(prefix="raft-vs-sft-code-"))
    refs = sorted({s.split("@")[1] for s in specs if "@" in s})
    codes = {ref: extract(ref, work / str(i)) for i, ref in enumerate(refs)}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in specs}
    for repeat in range(args.repeats):
        for spec in specs:
            result = run_child(args, spec, codes)
            runs[spec].append(result)
            status = "ok" if result.get("steps") else "error"
            print(f"[{spec} #{repeat}] {result['wall_s']:.0f}s {status}", file=sys.stderr)
    rows = [summarise(s, runs[s]) for s in specs]
    add_ratios(rows)
    print(f"data {args.data}, batch {args.batch}, {args.new_tokens} new tokens, "
          f"{args.steps} timed steps x {args.repeats} runs, model {args.model}, "
          f"threads {args.threads or 'default'}, clock {args.clock}")
    print_table(rows)
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    report = {"settings": vars(args), "head": git.stdout.strip(), "refs": refs,
              "cpu_count": os.cpu_count(), "table": rows, "raw": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="medmcqa", help="medmcqa, demo, or a JSONL path")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole variant list")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="cpu: phases and steps in CPU seconds of the process (with --threads 1, what a "
        "step costs whatever else the machine runs); wall: elapsed seconds",
    )
    parser.add_argument("--variants", default="sft,raft", help="names from VARIANTS, each @ref optional")
    parser.add_argument("--set", action="append", help="a dotted fit key for every variant: key=value")
    parser.add_argument("--out", default="/tmp/raft_vs_sft.json")
    parser.add_argument(
        "--student-ab", type=int, default=0, metavar="N",
        help="instead of the variants: the student's separate vs joint passes on the rows of "
        "N steps, alternated in one process",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.student_ab:
        student_ab(args)
    elif args.variant:
        Path(args.child_out).write_text(json.dumps(child(args)))
    else:
        parent(args)


if __name__ == "__main__":
    main()

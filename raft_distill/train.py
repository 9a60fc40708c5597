"""`raft-distill fit`: the loop over stage-2 steps, its trackers, metrics and summary.

The run is built by `run_setup.build_run` (accelerator, models, data, student, rollout
engine, optimizer and schedule, lambda's balance, in that order); each optimizer step is
`step.train_step`, which reads phase by phase as docs/METHOD.md's stage 2 (rollout,
teacher scores, KL, SFT, balance, AdamW); the run's folder and its checkpoints are
`checkpoints.py`. This module runs the steps from the start (or the resumed) step to the
end: the metrics row of each (metrics.jsonl and the trackers), the held-out loss every
`train.eval_every` steps, a checkpoint every `train.checkpoint_every`, then final/,
summary.json and the plots. Each decision that changes the result is logged once
(`raft_distill/log.py`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raft_distill import checkpoints, step
from raft_distill.checkpoints import RESUMABLE_KEYS, latest_checkpoint
from raft_distill.config import FitConfig
from raft_distill.log import run_log
from raft_distill.run_setup import (
    FitRun,
    adamw_kwargs,
    build_run,
    load_models,
    resolve_model_path,
)
from raft_distill.step_records import StepResult

__all__ = [
    "RESUMABLE_KEYS",
    "FitResult",
    "Trainer",
    "adamw_kwargs",
    "fit",
    "latest_checkpoint",
    "load_models",
    "metrics_row",
]
_resolve = resolve_model_path  # the name benchmarks/distill_step.py imports

log = logging.getLogger(__name__)

TRACKER_PROJECT = "raft-distill"  # the W&B project; TensorBoard's folder under tensorboard/


@dataclass
class FitResult:
    output_dir: Path
    steps: int
    final_model: Path
    metrics_path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    is_main_process: bool = True


def _flat_config(cfg: FitConfig) -> dict[str, Any]:
    """`section.key: value` with scalar values, as TensorBoard's hparams and W&B take them."""
    flat: dict[str, Any] = {}
    for section, values in cfg.model_dump(mode="json", by_alias=True).items():
        for key, value in values.items():
            scalar = isinstance(value, (bool, int, float, str))
            flat[f"{section}.{key}"] = value if scalar else json.dumps(value)
    return flat


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if (num is not None and den) else None


def metrics_row(run: FitRun, result: StepResult) -> dict[str, Any]:
    """A step's row of metrics.jsonl: its losses, lambda, sizes, timings (all processes)."""
    r, counts, kl, times = result, result.counts, result.kl, result.times
    if run.cfg.loss.mode == "raft":
        total = float(r.loss_sft or 0.0) + float(r.lam or 0.0) * float(r.loss_kl or 0.0)
    else:
        total = float(r.loss_sft if r.loss_sft is not None else r.loss_kl or 0.0)
    weighted_kl = (r.lam or 0.0) * (r.loss_kl or 0.0)
    n_seq, n_rest = counts.sequences, kl.positions - kl.n_first
    batch_size = run.cfg.train.batch_size
    return {
        "step": r.step + 1,
        "epoch": (r.step + 1) * batch_size / len(run.data.train),
        "lr": r.lr,
        "loss": total,
        "loss_sft": r.loss_sft,
        "loss_kl": r.loss_kl,
        "lambda": r.lam,
        "ce_kl_ratio": _ratio(r.loss_sft, weighted_kl if weighted_kl > 0 else None),
        "raw_ce_kl_ratio": _ratio(r.loss_sft, r.loss_kl),
        "topk_mass": _ratio(kl.mass, kl.positions),
        "teacher_reference_top1": _ratio(kl.reference_top1, kl.positions),
        "grad_norm": r.grad_norm,
        "sequences": batch_size,
        "sft_tokens": int(counts.sft_tokens),
        "trajectory_tokens": int(counts.trajectory_tokens),
        "mean_trajectory_len": _ratio(counts.trajectory_tokens, n_seq),
        "eos_fraction": _ratio(counts.eos_ended, n_seq),
        "max_new_tokens_fraction": _ratio(counts.cut, n_seq),
        "kl_first_position": _ratio(kl.first, kl.n_first),
        "kl_other_positions": _ratio(kl.rest, n_rest),
        "tokens_per_s": _ratio(counts.sft_tokens + counts.trajectory_tokens, r.elapsed),
        "step_s": r.elapsed,
        "rollout_s": times.rollout,
        "teacher_s": times.teacher,
        "student_s": times.student,
        "optimizer_s": times.optimizer,
        "peak_memory_mb": run.peak_memory_mb(),
        "skipped_rows": int(sum(run.data.skipped.values())),
    }


class Trainer:
    """One `fit` run: its built parts (`self.parts`, a `FitRun`) and `run()`, the loop."""

    def __init__(self, cfg: FitConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.resume = resume
        self.metrics_path = self.out / "metrics.jsonl"
        self.start_step = 0
        self.parts = build_run(cfg)
        checkpoints.register_state_layout(self.parts)

    @property
    def model(self) -> Any:
        """The student scorer (what `benchmarks/distill_step.py` puts in train mode)."""
        return self.parts.model

    def close(self) -> None:
        """Stop the vLLM engine (if any) and the trackers now, not at interpreter exit."""
        for tracker in self.parts.accelerator.trackers:
            tracker.finish()
        if self.parts.vllm is not None:
            self.parts.vllm.close()
            self.parts.vllm = None
        if self.parts.teacher_engine is not None:
            self.parts.teacher_engine.close()
            self.parts.teacher_engine = None

    def train_step(self, step_index: int) -> dict[str, Any]:
        """One optimizer step (`step.train_step`); returns its metrics row."""
        return metrics_row(self.parts, step.train_step(self.parts, step_index))

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-mean CE of the SFT target on the held-out rows (all processes share them)."""
        run = self.parts
        if not run.data.eval:
            return None
        run.model.eval()
        mine = run.data.eval[run.rank :: run.world]
        total = tokens = 0.0
        for j in range(0, len(mine), run.micro_batch):
            packed, n = run.sft_inputs(mine[j : j + run.micro_batch])
            targets = packed.targets.to(run.device)
            total += float(run.student(kind="sft", targets=targets, **run.to_device(packed)))
            tokens += n
        run.model.train()
        total, tokens = run.reduce_sum([total, tokens])
        return total / tokens if tokens else None

    # ------------------------------------------------------------ checkpoints
    def _prepare_output(self) -> None:
        checkpoints.prepare_output_dir(self.parts, self.out, self.resume)

    def save_model(self, folder: Path) -> None:
        checkpoints.save_model(self.parts, folder)

    def save_checkpoint(self, step_done: int) -> Path:
        """checkpoints/step-NNNNNN after `step_done` steps; complete once marked."""
        folder = checkpoints.step_folder(self.out, step_done)
        checkpoints.save_training_state(self.parts, folder)
        self.save_model(folder / "model")
        checkpoints.mark_complete(self.parts, folder, step_done, self.out)
        return folder

    def load_checkpoint(self) -> None:
        self.start_step = checkpoints.load_checkpoint(self.parts, self.out)
        if self.parts.accelerator.is_main_process:
            checkpoints.cut_metrics(self.metrics_path, self.start_step)

    # ------------------------------------------------------------------ loop
    def run(self) -> FitResult:
        self._prepare_output()
        if self.resume:
            self.load_checkpoint()
        self._start_trackers()
        self.parts.model.train()
        last = self._train_loop()
        return self._finish(last)

    def _start_trackers(self) -> None:
        """TensorBoard / W&B through accelerate (main process), with the flat config."""
        accelerator = self.parts.accelerator
        names = [str(t) for t in accelerator.log_with]
        if not names:
            log.info("trackers: none (train.report_to); metrics in %s", self.metrics_path)
            return
        init_kwargs: dict[str, dict[str, Any]] = {
            "wandb": {"dir": str(self.out), "name": self.out.name}
        }
        if self.start_step:  # TensorBoard drops the steps logged after the checkpoint
            init_kwargs["tensorboard"] = {"purge_step": self.start_step + 1}
        accelerator.init_trackers(TRACKER_PROJECT, _flat_config(self.cfg), init_kwargs)
        where = self.out / "tensorboard" / TRACKER_PROJECT
        log.info("trackers: %s (TensorBoard events in %s)", ", ".join(names), where)

    def _train_loop(self) -> dict[str, Any]:
        """Steps from the start (or resume) step to the end; returns the last metrics row."""
        from tqdm.auto import tqdm

        total, train = self.parts.total_steps, self.cfg.train
        bar = tqdm(
            total=total,
            initial=self.start_step,
            disable=not (self.parts.accelerator.is_main_process and train.progress),
            desc=f"raft-distill {self.cfg.loss.mode}",
        )
        last: dict[str, Any] = {}
        if self.start_step and self.metrics_path.exists():
            # resumed: the summary's final losses come from the last step even when it was
            # done before the kill (a run killed after its final checkpoint runs no step)
            from raft_distill.plots import read_metrics

            last = (read_metrics(self.metrics_path) or [{}])[-1]
        for index in range(self.start_step, total):
            last = self.train_step(index)
            done = index + 1
            if train.eval_every and done % train.eval_every == 0:
                last["eval_loss_sft"] = self.evaluate()
            self._record(last)
            bar.update(1)
            shown = ("loss_sft", "loss_kl", "lambda")
            bar.set_postfix({k: f"{last[k]:.3g}" for k in shown if last.get(k) is not None})
            if train.checkpoint_every and done % train.checkpoint_every == 0 and done < total:
                self.save_checkpoint(done)
        bar.close()
        return last

    def _record(self, row: dict[str, Any]) -> None:
        """One step's row: metrics.jsonl, the trackers (numbers only), the log file."""
        if self.parts.accelerator.is_main_process:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        numbers = {
            k: v
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.parts.accelerator.log(numbers, step=row["step"])
        shown = ("loss", "loss_sft", "loss_kl", "lambda")
        losses = ", ".join(f"{k} {row[k]:.6g}" for k in shown if row.get(k) is not None)
        log.debug("step %d: %s", row["step"], losses)

    def _finish(self, last: dict[str, Any]) -> FitResult:
        """Held-out loss, the final checkpoint and model, summary.json and the plots."""
        total = self.parts.total_steps
        eval_loss = self.evaluate()
        ckpt = self.save_checkpoint(total)
        final = self.out / "final"
        main = self.parts.accelerator.is_main_process
        if main:
            checkpoints.write_final(ckpt, final)
        self.parts.accelerator.wait_for_everyone()
        summary = self._summary(last, eval_loss, final)
        if main:
            from raft_distill.plots import plot_metrics

            text = json.dumps(summary, indent=2) + "\n"
            checkpoints.atomic_write_text(self.out / "summary.json", text)
            summary["plots"] = [str(p) for p in plot_metrics(self.metrics_path, self.out)]
        log.info("done: %d steps, final model %s, summary %s", total, final, self.out / "summary.json")
        return FitResult(self.out, total, final, self.metrics_path, summary, main)

    def _summary(
        self, last: dict[str, Any], eval_loss: float | None, final: Path
    ) -> dict[str, Any]:
        run = self.parts
        distributed = run.accelerator.distributed_type.value  # NO, MULTI_CPU, MULTI_GPU
        return {
            "mode": self.cfg.loss.mode,
            "steps": run.total_steps,
            "resumed_from": self.start_step if self.resume else None,
            "train_rows": len(run.data.train),
            "eval_rows": len(run.data.eval),
            "source_rows": run.data.source_rows,
            "skipped_rows": dict(run.data.skipped),
            "processes": run.world,
            "rollout_engine": self.cfg.rollout.engine if self.cfg.loss.mode != "sft" else None,
            "distributed": "FSDP" if self.cfg.train.fsdp else str(distributed),
            "bf16": run.bf16,
            "tf32": run.tf32,
            "final_loss_sft": last.get("loss_sft"),
            "final_loss_kl": last.get("loss_kl"),
            "final_lambda": last.get("lambda"),
            "eval_loss_sft": eval_loss,
            "peak_memory_mb": run.peak_memory_mb(),
            "final_model": str(final),
        }


def fit(cfg: FitConfig, resume: bool = False) -> FitResult:
    """Run `raft-distill fit` for a validated config; see the module docstring. The run's
    log goes to `<train.output_dir>/logs/fit-<UTC time>.log` (`raft_distill/log.py`)."""
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun / accelerate launch
    with run_log(Path(cfg.train.output_dir) / "logs", "fit", main=rank == 0, rank=rank) as path:
        log.info(
            "raft-distill fit, loss.mode %s%s; log %s",
            cfg.loss.mode,
            " (--resume)" if resume else "",
            path,
        )
        trainer = Trainer(cfg, resume=resume)
        try:
            return trainer.run()
        finally:
            trainer.close()

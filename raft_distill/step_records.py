"""What one stage-2 step reports (`step.train_step`): phase times, the step's sizes, its KL
sums, and the result train.py turns into a metrics.jsonl row. Apart from step.py, so that
the step reads as the method."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from raft_distill.loss import topk_mass
from raft_distill.teacher import TeacherScores


@dataclass
class StepTimes:
    """Seconds per phase, also named as profiler ranges (`raft_distill.<phase>`)."""

    rollout: float = 0.0
    teacher: float = 0.0
    student_sft: float = 0.0  # the SFT pass (the passes apart)
    student_kl: float = 0.0  # the KL pass (the passes apart)
    student_joint: float = 0.0  # one pass for both (`joint_backward`)
    optimizer: float = 0.0

    @property
    def student(self) -> float:
        """All of the student's forward and backward passes."""
        return self.student_sft + self.student_kl + self.student_joint


@dataclass
class StepCounts:
    """One step's sizes over all processes: the loss denominators and rollout figures."""

    sequences: float  # KL sequences (0 without the KL term): L_KL's denominator
    sft_tokens: float  # target tokens of y^ (0 without the SFT term): L_SFT's denominator
    trajectory_tokens: float
    eos_ended: float  # z that ended with an eos
    cut: float  # z cut at its budget (rollout.max_new_tokens or its row's cap), not by an eos


@dataclass
class KLSums:
    """One step's KL sums over micro-batches; per-position KL (no T^2) at z's first token
    (`first`, `n_first`) apart from the other positions."""

    kl: float = 0.0  # sum_i (T^2 / L_i) sum_t KL(q_t || p_t)
    mass: float = 0.0  # teacher probability in its top-K, summed over positions
    positions: float = 0.0
    first: float = 0.0
    rest: float = 0.0
    n_first: float = 0.0
    reference_top1: float = 0.0  # positions whose teacher top-1 starts a reference word

    def add(
        self, kl_part: float, kl_tok: torch.Tensor, scores: TeacherScores, at_first: torch.Tensor,
        at_reference: torch.Tensor,
    ) -> None:
        """A micro-batch's KL, top-K mass, first-position and reference figures added in."""
        self.kl += kl_part
        self.reference_top1 += int(at_reference.sum())
        self.mass += float(topk_mass(scores.topk_values, scores.logsumexp).sum())
        self.positions += int(kl_tok.numel())
        self.first += float(kl_tok[at_first].sum())
        self.rest += float(kl_tok[~at_first].sum())
        self.n_first += int(at_first.sum())


@dataclass
class StepResult:
    """What one step computed, summed over processes; metrics.jsonl's row is made of it."""

    step: int  # 0-based
    loss_sft: float | None  # L_SFT (None without the SFT term)
    loss_kl: float | None  # L_KL (None without the KL term)
    lam: float | None  # lambda (raft mode only)
    grad_norm: float | None  # before clipping (None with train.max_grad_norm unset)
    lr: float  # the learning rate this step used
    counts: StepCounts
    kl: KLSums
    times: StepTimes
    elapsed: float  # seconds


@contextlib.contextmanager
def timed(times: StepTimes, name: str) -> Iterator[None]:
    """Adds the block's seconds to `times.<name>`; in a profiler's trace it is the range
    `raft_distill.<phase>` (each student pass: `raft_distill.student`)."""
    start = time.perf_counter()
    with torch.profiler.record_function(f"raft_distill.{name.partition('_')[0]}"):
        yield
    setattr(times, name, getattr(times, name) + time.perf_counter() - start)

"""One stage-2 optimizer step (docs/METHOD.md, stage 2), phase by phase, in METHOD's order:

1. `rollout_trajectories`: the student samples one trajectory z ~ S(. | x) per prompt;
2. `teacher_scores`: the frozen teacher's top-K logits on z, read after its
   answer-conditioned context (y^ and x; x alone in on-policy mode);
3. `kl_backward`: the student's logits at those ids on z given x alone, the top-K
   temperature forward KL (`loss.topk_forward_kl`; positions where the teacher's top-1
   starts 'reference' are counted, and dropped under loss.mask_reference_kl), its backward;
4. `sft_backward`: the student's token-mean CE on y^ given x, and its backward;
5. `balance_gradients`: lambda from the bias-corrected EMA of both full-step losses,
   g = g_SFT + lambda * g_KL; `optimizer_step`: clip, AdamW, schedule.
`train_step` runs them and returns a `StepResult`; train.py makes it a metrics.jsonl row.

Every loss piece is divided by the whole step's sequences (KL) or target tokens (SFT) over
all micro-batches and processes (`count_step`, first): loss, gradient and lambda do not
depend on the micro-batch split. With the EMA, g_SFT (first) is set aside while g_KL
accumulates (`set_aside_sft_gradients`), then combined: exact, one extra gradient buffer.
The same code runs on one CPU, with DDP and with FSDP2.

Where lambda is known before the backward (fixed, or the EMA with one micro-batch per
process) phases 3 and 4 can run as one student pass instead (`joint_backward`, the
default on CPU: `train.student_pass`): each row's x, y^ and z in one packed segment
(`joint.py`), x read once, lambda from the forward's losses, one backward of
L_SFT + lambda * L_KL, no g_SFT set aside; the losses and gradients are those of the
separate passes up to rounding (tests/distill/test_step_joint.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch

from raft_distill import lora, rollout, teacher
from raft_distill.data import Example, step_indices
from raft_distill.joint import JointPacked, pack_joint, use_joint_pass
from raft_distill.loss import kl_sequence_sum, topk_forward_kl
from raft_distill.run_setup import FitRun
from raft_distill.step_records import KLSums, StepCounts, StepResult, StepTimes, timed
from raft_distill.teacher_vllm import score_with_engine


def train_step(run: FitRun, step: int) -> StepResult:
    """One optimizer step over the global batch of `step` (0-based): phases 1 to 5."""
    times = StepTimes()
    started = time.perf_counter()
    examples = local_examples(run, step)
    size = run.micro_batch
    micro = [examples[j : j + size] for j in range(0, len(examples), size)]
    trajectories = rollout_trajectories(run, step, examples, times) if run.use_kl else []
    counts = count_step(run, examples, trajectories)
    ema_lam, stash = None, None  # the joint pass knows the EMA lambda before its backward
    if use_joint_pass(run, micro, trajectories):
        sft_sum, kl, ema_lam = joint_backward(run, micro, trajectories, counts, times)
    else:
        sft_sum = sft_backward(run, micro, counts.sft_tokens, times) if run.use_sft else 0.0
        stash = set_aside_sft_gradients(run) if run.two_phase else None
        kl = KLSums()
        if run.use_kl:
            kl = kl_backward(run, micro, trajectories, counts.sequences, times)
    sft_total, *kl_totals = run.reduce_sum([sft_sum, *dataclasses.astuple(kl)])
    kl = KLSums(*kl_totals)
    loss_sft = sft_total / counts.sft_tokens if run.use_sft else None
    loss_kl = kl.kl / counts.sequences if run.use_kl else None
    with timed(times, "optimizer"):
        lam = ema_lam if ema_lam is not None else balance_gradients(run, loss_sft, loss_kl, stash)
        grad_norm, lr = optimizer_step(run)
    elapsed = time.perf_counter() - started
    return StepResult(step, loss_sft, loss_kl, lam, grad_norm, lr, counts, kl, times, elapsed)


def local_examples(run: FitRun, step: int) -> list[Example]:
    """This process's share of the step's global batch (rows fixed by the step alone)."""
    t = run.cfg.train
    indices = step_indices(step, t.batch_size, len(run.data.train), t.seed)
    mine = indices[run.rank * run.local_batch : (run.rank + 1) * run.local_batch]
    return [run.data.train[i] for i in mine]


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1009 + rank) % (2**63 - 1)


def rollout_trajectories(
    run: FitRun, step: int, examples: list[Example], times: StepTimes
) -> list[list[int]]:
    """Phase 1: one trajectory z ~ S(. | x) per prompt, seeded by (seed, step, rank), cut
    at its row's budget (`rollout.row_caps`: max_new_tokens unless target_length_factor)."""
    seed = step_seed(run.cfg.train.seed, step, run.rank)
    prompts = [e.prompt_ids for e in examples]
    caps = _caps(run, examples)
    if run.vllm is not None:
        with timed(times, "rollout"):
            if run.vllm_synced_step != step:  # the weights changed since the last rollout
                # LoRA: the merged weights W + (alpha / r) B A, computed afresh
                weights = lora.merged_parameters(run.peft) if run.peft else None
                run.vllm.sync_weights(weights or run.student_lm().named_parameters())
                run.vllm_synced_step = step
            trajectories: list[list[int]] = run.vllm.sample(prompts, run.eos_ids, seed)
        # per-request seeds: a capped z is the z sampled to max_new_tokens, cut at its cap
        return trajectories if caps is None else [z[:c] for z, c in zip(trajectories, caps, strict=True)]
    torch.manual_seed(seed)
    with timed(times, "rollout"):
        return rollout.sample_trajectories(
            run.student_lm(), prompts, run.cfg.rollout, run.pad_id, run.eos_ids, run.device,
            autocast=run.bf16, gather_params=run.gather_params(), caps=caps,
        )


def _caps(run: FitRun, examples: list[Example]) -> list[int] | None:
    """Each row's trajectory budget with rollout.target_length_factor; None without it."""
    if run.cfg.rollout.target_length_factor is None:
        return None
    return rollout.row_caps(run.cfg.rollout, [len(e.target_ids) for e in examples])


def count_step(run: FitRun, examples: list[Example], trajectories: list[list[int]]) -> StepCounts:
    """The step's sizes summed over processes: the loss denominators come first."""
    sft_tokens = sum(len(e.target_ids) for e in examples) if run.use_sft else 0
    caps = (_caps(run, examples) or [run.cfg.rollout.max_new_tokens] * len(examples)) if trajectories else []
    eos = run.eos_ids  # z cut at its budget, not by eos: a truncated answer
    n_cut = sum(
        1 for z, cap in zip(trajectories, caps, strict=True) if len(z) >= cap and z[-1] not in eos
    )
    values = [
        float(len(examples)) if run.use_kl else 0.0,
        float(sft_tokens),
        float(sum(len(z) for z in trajectories)),
        float(sum(1 for z in trajectories if z and z[-1] in eos)),
        float(n_cut),
    ]
    return StepCounts(*run.reduce_sum(values))


def teacher_scores(run: FitRun, batch: list[Example], z: list[list[int]]) -> teacher.TeacherScores:
    """Phase 2: the frozen teacher's top-K logits (and logsumexp) at each position of z,
    read after its context (y^ and x, or x alone in on-policy mode)."""
    cfg = run.cfg.loss
    if run.teacher_engine is not None:  # teacher.engine vllm (teacher_vllm.py)
        return score_with_engine(run.teacher_engine, [e.teacher_ids for e in batch], z, cfg.top_k)
    packed = teacher.pack([e.teacher_ids for e in batch], z, run.pad_id)
    base = run.teacher_model is None  # LoRA: the student's base, adapters disabled
    frozen = lora.adapters_off(run.peft) if base else contextlib.nullcontext(run.teacher_model)
    with frozen as model:
        return teacher.score(
            model, packed, cfg.top_k, cfg.logit_chunk_size, run.device, autocast=run.bf16
        )


def kl_backward(
    run: FitRun, micro: list[list[Example]], z_all: list[list[int]], n_seq: float, times: StepTimes
) -> KLSums:
    """Phase 3: per micro-batch, teacher scores then the student's top-K KL on z given x,
    and the backward of its share of L_KL (weighted by a fixed lambda in one-phase
    mode). Returns this process's sums."""
    mode = run.cfg.loss.mode
    kl_weight = run.balance.lam if (mode == "raft" and not run.two_phase) else 1.0
    factor = kl_weight * float(run.world) / n_seq
    sums = KLSums()
    start = 0
    for j, batch in enumerate(micro):
        z = z_all[start : start + len(batch)]
        start += len(batch)
        with timed(times, "teacher"):
            scores = teacher_scores(run, batch, z)
        with timed(times, "student_kl"):
            _kl_micro_batch(run, batch, z, scores, j == len(micro) - 1, factor, sums)
    return sums


def _kl_micro_batch(
    run: FitRun, batch: list[Example], z: list[list[int]], scores: teacher.TeacherScores,
    last: bool, factor: float, sums: KLSums,
) -> None:
    """The student's gathered logits at the teacher's top-K ids, the KL, its backward."""
    temperature = run.cfg.loss.temperature
    packed = teacher.pack([e.prompt_ids for e in batch], z, run.pad_id)
    at_reference, weight = run.kl_weights(scores.topk_ids, packed.weight)
    with run.grad_sync(last):
        v_k = run.student(kind="kl", topk_ids=scores.topk_ids, **run.to_device(packed))
        kl_tok = topk_forward_kl(scores.topk_values, v_k, temperature)
        kl_part = kl_sequence_sum(kl_tok, weight, temperature)
        run.accelerator.backward(kl_part * factor)
    sums.add(float(kl_part.detach()), kl_tok.detach(), scores, packed.first.to(run.device), at_reference)


def joint_backward(
    run: FitRun, micro: list[list[Example]], z_all: list[list[int]], counts: StepCounts,
    times: StepTimes,
) -> tuple[float, KLSums, float | None]:
    """Phases 3 and 4 in one student pass per micro-batch (`joint.py`): teacher scores,
    one forward over the packed [x, y^, z] segments giving the CE sum and the K logits, and
    one backward of CE * world / n_tok + lambda * KL * world / n_seq. With the EMA (one
    micro-batch per process) lambda comes from this step's losses summed over processes
    between the forward and the backward: the EMA lambda is returned, else None.
    Returns this process's CE sum and KL sums as well."""
    scale, sums, sft_sum, ema_lam = float(run.world), KLSums(), 0.0, None
    lam = run.balance.lam
    start = 0
    for j, batch in enumerate(micro):
        z = z_all[start : start + len(batch)]
        start += len(batch)
        with timed(times, "teacher"):
            scores = teacher_scores(run, batch, z)
        with timed(times, "student_joint"), run.grad_sync(j == len(micro) - 1):
            packed = pack_joint([e.prompt_ids for e in batch], [e.target_ids for e in batch], z, run.pad_id)
            at_reference, kl_weight = run.kl_weights(scores.topk_ids, packed.kl.weight)
            ce_sum, kl_part, kl_tok = _joint_forward(run, packed, scores, kl_weight)
            if run.two_phase:
                total_ce, total_kl = run.reduce_sum([float(ce_sum.detach()), float(kl_part.detach())])
                lam = ema_lam = run.balance.update(total_ce / counts.sft_tokens, total_kl / counts.sequences)
            weighted = ce_sum * (scale / counts.sft_tokens) + kl_part * (lam * scale / counts.sequences)
            run.accelerator.backward(weighted)
        sft_sum += float(ce_sum.detach())
        sums.add(float(kl_part.detach()), kl_tok.detach(), scores, packed.kl.first.to(run.device), at_reference)
    return sft_sum, sums, ema_lam


def _joint_forward(
    run: FitRun, packed: JointPacked, scores: teacher.TeacherScores, kl_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CE sum on y^, T^2 sum_i (1/L_i) sum_t KL_t on z, per-position KL) from one forward."""
    temperature = run.cfg.loss.temperature
    d = run.device
    with torch.autocast(device_type=d.type, dtype=torch.bfloat16, enabled=run.bf16):
        ce_sum, v_k = run.model(
            input_ids=packed.input_ids.to(d),
            attention_mask=packed.attention_mask.to(d),
            position_ids=packed.position_ids.to(d),
            batch_index=packed.sft.batch_index.to(d),
            position_index=packed.sft.position_index.to(d),
            kl_batch_index=packed.kl.batch_index.to(d),
            kl_position_index=packed.kl.position_index.to(d),
            targets=packed.sft.targets.to(d),
            topk_ids=scores.topk_ids,
            kind="joint",
        )
    kl_tok = topk_forward_kl(scores.topk_values, v_k, temperature)
    return ce_sum, kl_sequence_sum(kl_tok, kl_weight, temperature), kl_tok


def sft_backward(run: FitRun, micro: list[list[Example]], n_tok: float, times: StepTimes) -> float:
    """Phase 4: CE of S on y^ given x, teacher-forced; the backward of its share of L_SFT
    (sum / the step's target tokens). Returns this process's CE sum."""
    scale = float(run.world)  # DDP/FSDP average gradients over processes
    sft_sum = 0.0
    with timed(times, "student_sft"):
        for j, batch in enumerate(micro):
            packed, _ = run.sft_inputs(batch)
            with run.grad_sync(j == len(micro) - 1):
                ce_sum = run.student(
                    kind="sft", targets=packed.targets.to(run.device), **run.to_device(packed)
                )
                run.accelerator.backward(ce_sum * (scale / n_tok))
            sft_sum += float(ce_sum.detach())
    return sft_sum


def set_aside_sft_gradients(run: FitRun) -> list[torch.Tensor | None]:
    """g_SFT kept apart while g_KL accumulates: lambda needs both full-step losses."""
    stash = [None if p.grad is None else p.grad.detach().clone() for p in run.model.parameters()]
    run.optimizer.zero_grad(set_to_none=True)
    return stash


def balance_gradients(
    run: FitRun, loss_sft: float | None, loss_kl: float | None, stash: list[torch.Tensor | None] | None
) -> float | None:
    """Phase 5a: lambda from this step's losses (raft mode); with the EMA, the gradient
    becomes g = g_SFT + lambda * g_KL (g_KL is in p.grad, g_SFT in `stash`)."""
    if run.cfg.loss.mode != "raft":
        return None
    lam = run.balance.update(float(loss_sft or 0.0), float(loss_kl or 0.0))
    if stash is not None:
        for p, g_sft in zip(run.model.parameters(), stash, strict=True):
            if p.grad is None:
                p.grad = g_sft
            elif g_sft is not None:
                p.grad.mul_(lam).add_(g_sft)
            else:
                p.grad.mul_(lam)
    return lam


def optimizer_step(run: FitRun) -> tuple[float | None, float]:
    """Phase 5b: clip, AdamW step, schedule step; returns the gradient norm before
    clipping and the learning rate the step used."""
    max_norm = run.cfg.train.max_grad_norm
    grad_norm = None
    if max_norm is not None:
        grad_norm = float(run.accelerator.clip_grad_norm_(run.model.parameters(), max_norm))
    lr = float(run.scheduler.get_last_lr()[0])
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr

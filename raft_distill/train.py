"""The stage-2 loop: sample -> teacher score -> student score -> loss -> step.

Each optimizer step, as in METHOD.md stage 2:
1. the student samples one trajectory z per prompt x (`rollout`);
2. the frozen teacher scores z under the answer-conditioned template (`teacher`);
3. the student scores z given x alone, giving the top-K temperature KL (`loss`);
4. the student's token-mean CE on y^ given x (`loss`);
5. lambda from the bias-corrected EMA of both full-step losses (`balance`), then
   L = L_SFT + lambda * L_KL and one AdamW step.

Every loss piece is divided by the number of sequences (KL) or target tokens (SFT) of the
whole step over all micro-batches and processes, so the loss, its gradient and lambda do
not depend on the micro-batch split. Because lambda needs the full-step losses before it
can weight the KL gradient, the SFT and KL gradients are accumulated in two phases and
combined as g = g_SFT + lambda * g_KL (exact, one extra gradient buffer). The same code
runs on one CPU, under `torchrun`/`accelerate launch` with DDP, and with FSDP2 (sharding.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from raft_distill import rollout, sharding, teacher
from raft_distill.balance import EmaBalance, FixedBalance
from raft_distill.config import FitConfig
from raft_distill.data import Dataset, Example, build_dataset, load_rows, step_indices
from raft_distill.errors import DistillError
from raft_distill.head import check_head
from raft_distill.loss import kl_sequence_sum, topk_forward_kl, topk_mass
from raft_distill.student import StudentScorer, autocast_supported

# Keys that may change on --resume without changing what the run means.
RESUMABLE_KEYS = {"max_steps", "epochs", "checkpoint_every", "eval_every", "progress"}


@dataclass
class FitResult:
    output_dir: Path
    steps: int
    final_model: Path
    metrics_path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    is_main_process: bool = True


@dataclass
class StepTimes:
    rollout: float = 0.0
    teacher: float = 0.0
    student: float = 0.0
    optimizer: float = 0.0


@contextlib.contextmanager
def _timed(times: StepTimes, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    setattr(times, name, getattr(times, name) + time.perf_counter() - start)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: max_memory_allocated on CUDA, peak RSS of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1009 + rank) % (2**63 - 1)


def _resolve(name: str) -> Path:
    from schemas.model_registry import resolve_model

    return Path(resolve_model(name).path)


def load_models(cfg: FitConfig) -> tuple[Any, Any, Any]:
    """Tokenizer, student LM and (unless sft mode) the frozen teacher.

    Checks the shared vocabulary, and that each model's logits are what `head.py` computes
    (its bias and logit post-processing), refusing a model whose head does more.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student_path = _resolve(cfg.model.student)
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    check_head(student, cfg.model.student)
    teacher_model = None
    if cfg.loss.mode != "sft":
        teacher_path = _resolve(cfg.teacher_name)
        if teacher_path != student_path:
            t_tok = AutoTokenizer.from_pretrained(teacher_path)
            if t_tok.get_vocab() != tokenizer.get_vocab():
                raise DistillError(
                    f"teacher '{cfg.teacher_name}' and student '{cfg.model.student}' have "
                    "different tokenizer vocabularies; top-K distillation needs the same ids"
                )
        teacher_model = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        check_head(teacher_model, cfg.teacher_name)
        t_vocab = teacher_model.get_output_embeddings().weight.shape[0]
        s_vocab = student.get_output_embeddings().weight.shape[0]
        if t_vocab != s_vocab:
            raise DistillError(
                f"teacher lm_head has {t_vocab} rows, student {s_vocab}; they must match"
            )
    return tokenizer, student, teacher_model


def make_accelerator(cfg: FitConfig) -> Any:
    from accelerate import Accelerator

    # accelerate sets up the processes (gloo on CPU only with cpu=True) and DDP; FSDP is
    # applied by sharding.py, since accelerate's FSDP plugin does not run on CPU processes
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(step_scheduler_with_optimizer=False, cpu=cpu)
    if cfg.train.fsdp and accelerator.num_processes < 2:
        raise DistillError(
            "train.fsdp shards the student over processes: launch with `torchrun "
            "--nproc_per_node=N -m raft_distill fit ...` or `accelerate launch`, N >= 2"
        )
    return accelerator


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _comparable(cfg: FitConfig) -> dict[str, Any]:
    raw = cfg.model_dump(mode="json", by_alias=True)
    for key in RESUMABLE_KEYS:
        raw["train"].pop(key, None)
    return raw


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (its trainer_state.json is written last)."""
    found = []
    for path in (output_dir / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", path.name)
        if m and (path / "trainer_state.json").exists():
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


class Trainer:
    """Holds the models, data and state of one `fit` run; `run()` is the loop."""

    def __init__(self, cfg: FitConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.accelerator = make_accelerator(cfg)
        self.device = self.accelerator.device
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.out = Path(cfg.train.output_dir)
        self.resume = resume
        self._plan_batches()
        self.tokenizer, lm, self.teacher_model = load_models(cfg)
        rows, _ = load_rows(cfg.data.path, cfg.data.revision)
        self.data: Dataset = build_dataset(
            rows, self.tokenizer, cfg.data, cfg.loss, cfg.teacher, source=cfg.data.path
        )
        if not self.data.train:
            raise DistillError(
                f"{cfg.data.path}: no training rows left after filtering "
                f"(skipped: {dict(self.data.skipped)}, eval: {len(self.data.eval)})"
            )
        self.total_steps = cfg.train.max_steps or math.ceil(
            cfg.train.epochs * len(self.data.train) / cfg.train.batch_size
        )
        self.bf16 = cfg.train.bf16 and autocast_supported(self.device)
        if cfg.train.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
        if self.teacher_model is not None:
            self.teacher_model.to(self.device)
        self.model = StudentScorer(lm, chunk=cfg.loss.logit_chunk_size)
        if cfg.train.fsdp:
            sharding.shard_student(self.model, self.device)
        self.vllm = self._open_vllm()
        self._vllm_synced_step: int | None = None
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.train.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.train.lr,
            betas=cfg.train.adam_betas,
            eps=cfg.train.adam_eps,
        )
        if cfg.train.fsdp:
            # not handed to accelerate: sharding.py saves and restores the sharded state
            self.optimizer = optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        from transformers import get_scheduler

        try:
            self.scheduler = get_scheduler(
                cfg.train.lr_scheduler,
                self.optimizer,
                num_warmup_steps=cfg.train.warmup_steps,
                num_training_steps=self.total_steps,
            )
        except ValueError as err:
            raise DistillError(f"train.lr_scheduler: {err}") from None
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.balance: EmaBalance | FixedBalance
        if cfg.loss.lambda_ == "ema":
            self.balance = EmaBalance(beta=cfg.loss.ema_beta, eps=cfg.loss.eps)
        else:
            self.balance = FixedBalance(float(cfg.loss.lambda_))
        self.start_step = 0
        self.metrics_path = self.out / "metrics.jsonl"
        eos = {int(self.tokenizer.eos_token_id)}
        gen_eos = getattr(lm.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            eos.add(gen_eos)
        elif isinstance(gen_eos, list):
            eos.update(int(e) for e in gen_eos)
        self.eos_ids = eos
        self.pad_id = int(self.tokenizer.pad_token_id)

    # ----------------------------------------------------------------- setup
    def _plan_batches(self) -> None:
        t = self.cfg.train
        per_step = self.world * t.gradient_accumulation_steps
        if t.batch_size % per_step:
            raise DistillError(
                f"train.batch_size {t.batch_size} is not divisible by processes ({self.world}) "
                f"x train.gradient_accumulation_steps ({t.gradient_accumulation_steps})"
            )
        self.local_batch = t.batch_size // self.world
        self.micro_batch = t.batch_size // per_step

    def _prepare_output(self) -> None:
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            config_text = yaml.safe_dump(self.cfg.model_dump(mode="json", by_alias=True))
            saved = self.out / "config.yaml"
            if self.resume:
                ckpt = latest_checkpoint(self.out)
                if ckpt is None:
                    raise DistillError(
                        f"--resume: no complete checkpoint under {self.out}/checkpoints"
                    )
                old = yaml.safe_load(saved.read_text()) if saved.exists() else None
                if old is not None:
                    for key in RESUMABLE_KEYS:
                        old.get("train", {}).pop(key, None)
                    if old != _comparable(self.cfg):
                        raise DistillError(
                            f"--resume: {saved} differs from this config beyond "
                            f"{sorted(RESUMABLE_KEYS)}; use a new train.output_dir"
                        )
            elif latest_checkpoint(self.out) is not None:
                raise DistillError(
                    f"{self.out} already holds checkpoints; pass --resume or choose another "
                    "train.output_dir"
                )
            else:
                # a fresh run starts a fresh metrics file (a resumed one is cut at its checkpoint)
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
            _atomic_write_text(saved, config_text)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------ checkpoints
    def save_model(self, folder: Path) -> None:
        """A plain HF folder (safetensors + config + tokenizer) that transformers loads."""
        unwrapped = self.accelerator.unwrap_model(self.model).lm
        state = None
        if self.cfg.train.fsdp:
            full = sharding.full_state_dict(self.model)  # every process takes part
            # a tied head appears under both names in a full state dict: keep one, as
            # save_pretrained does for an unsharded model
            tied = {n for n, _ in unwrapped.named_parameters(remove_duplicate=False)}
            tied -= {n for n, _ in unwrapped.named_parameters()}
            state = {k.removeprefix("lm."): v for k, v in full.items()}
            state = {k: v for k, v in state.items() if k not in tied}
        if self.accelerator.is_main_process:
            unwrapped.config.use_cache = True
            unwrapped.save_pretrained(folder, state_dict=state, safe_serialization=True)
            unwrapped.config.use_cache = False
            self.tokenizer.save_pretrained(folder)

    def save_checkpoint(self, step: int) -> Path:
        folder = self.out / "checkpoints" / f"step-{step:06d}"
        self.accelerator.save_state(str(folder / "state"))  # scheduler, RNG (+ DDP model/optim)
        if self.cfg.train.fsdp:
            sharding.save_sharded(folder / "fsdp", self.model, self.optimizer)
        self.save_model(folder / "model")
        if self.accelerator.is_main_process:
            state = {
                "step": step,
                "total_steps": self.total_steps,
                "balance": self.balance.state_dict(),
                "skipped_rows": dict(self.data.skipped),
            }
            _atomic_write_text(folder / "trainer_state.json", json.dumps(state, indent=2))
        self.accelerator.wait_for_everyone()
        return folder

    def load_checkpoint(self) -> None:
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            raise DistillError(f"--resume: no complete checkpoint under {self.out}/checkpoints")
        self.accelerator.load_state(str(ckpt / "state"))
        if self.cfg.train.fsdp:
            sharding.load_sharded(ckpt / "fsdp", self.model, self.optimizer)
        state = json.loads((ckpt / "trainer_state.json").read_text())
        self.balance.load_state_dict(state["balance"])
        self.start_step = int(state["step"])
        if self.accelerator.is_main_process and self.metrics_path.exists():
            kept = [
                line
                for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.start_step
            ]
            _atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ step
    def _student(self, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out: torch.Tensor = self.model(**kwargs)
        return out

    def _sft_inputs(self, batch: list[Example]) -> tuple[teacher.Packed, int]:
        packed = teacher.pack(
            [e.prompt_ids for e in batch], [e.target_ids for e in batch], self.pad_id
        )
        return packed, int(packed.targets.numel())

    def _to(self, packed: teacher.Packed) -> dict[str, torch.Tensor]:
        return {
            "input_ids": packed.input_ids.to(self.device),
            "attention_mask": packed.attention_mask.to(self.device),
            "batch_index": packed.batch_index.to(self.device),
            "position_index": packed.position_index.to(self.device),
        }

    def _reduce(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return [float(v) for v in t.tolist()]

    def _sync(self, last: bool) -> Any:
        """Reduce gradients over processes only on the last micro-batch of a step."""
        if self.cfg.train.fsdp:
            return sharding.gradient_sync(self.model, enabled=last)
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step over the global batch of `step`; returns its metrics."""
        cfg = self.cfg
        mode = cfg.loss.mode
        times = StepTimes()
        started = time.perf_counter()
        indices = step_indices(step, cfg.train.batch_size, len(self.data.train), cfg.train.seed)
        mine = indices[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        examples = [self.data.train[i] for i in mine]
        micro = [
            examples[j : j + self.micro_batch] for j in range(0, len(examples), self.micro_batch)
        ]
        use_kl = mode in ("raft", "on-policy")
        use_sft = mode in ("raft", "sft")

        trajectories: list[list[int]] = []
        if use_kl and self.vllm is not None:
            with _timed(times, "rollout"):
                if self._vllm_synced_step != step:  # the weights changed since the last rollout
                    lm = self.accelerator.unwrap_model(self.model).lm
                    self.vllm.sync_weights(lm.named_parameters())
                    self._vllm_synced_step = step
                trajectories = self.vllm.sample(
                    [e.prompt_ids for e in examples],
                    self.eos_ids,
                    _step_seed(cfg.train.seed, step, self.rank),
                )
        elif use_kl:
            torch.manual_seed(_step_seed(cfg.train.seed, step, self.rank))
            with _timed(times, "rollout"):
                trajectories = rollout.sample_trajectories(
                    self.accelerator.unwrap_model(self.model).lm,
                    [e.prompt_ids for e in examples],
                    cfg.rollout,
                    self.pad_id,
                    self.eos_ids,
                    self.device,
                    autocast=self.bf16,
                    gather_params=self._gather_params(),
                )
        sft_tokens_local = sum(len(e.target_ids) for e in examples) if use_sft else 0
        traj_tokens_local = sum(len(z) for z in trajectories)
        max_new = cfg.rollout.max_new_tokens  # z cut there, not by eos: a truncated answer
        n_cut_local = sum(1 for z in trajectories if len(z) >= max_new and z[-1] not in self.eos_ids)
        n_seq, n_tok, traj_tok, eos_end, n_cut = self._reduce(
            [
                float(len(examples)) if use_kl else 0.0,
                float(sft_tokens_local),
                float(traj_tokens_local),
                float(sum(1 for z in trajectories if z and z[-1] in self.eos_ids)),
                float(n_cut_local),
            ]
        )

        scale = float(self.world)  # DDP/FSDP average gradients over processes
        sft_sum = 0.0
        if use_sft:
            with _timed(times, "student"):
                for j, batch in enumerate(micro):
                    packed, _ = self._sft_inputs(batch)
                    with self._sync(j == len(micro) - 1):
                        ce_sum = self._student(
                            kind="sft", targets=packed.targets.to(self.device), **self._to(packed)
                        )
                        self.accelerator.backward(ce_sum * (scale / n_tok))
                    sft_sum += float(ce_sum.detach())

        stash: list[torch.Tensor | None] | None = None
        two_phase = mode == "raft" and isinstance(self.balance, EmaBalance)
        if two_phase:
            stash = [
                None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()
            ]
            self.optimizer.zero_grad(set_to_none=True)

        kl_sum = mass_sum = 0.0
        positions = 0
        kl_first = kl_rest = 0.0  # per-position KL at z's first token vs the others (no T^2)
        n_first = 0
        if use_kl:
            kl_weight = self.balance.lam if (mode == "raft" and not two_phase) else 1.0
            start = 0
            for j, batch in enumerate(micro):
                z = trajectories[start : start + len(batch)]
                start += len(batch)
                with _timed(times, "teacher"):
                    t_packed = teacher.pack([e.teacher_ids for e in batch], z, self.pad_id)
                    scores = teacher.score(
                        self.teacher_model,
                        t_packed,
                        cfg.loss.top_k,
                        cfg.loss.logit_chunk_size,
                        self.device,
                        autocast=self.bf16,
                    )
                with _timed(times, "student"):
                    s_packed = teacher.pack([e.prompt_ids for e in batch], z, self.pad_id)
                    with self._sync(j == len(micro) - 1):
                        v_k = self._student(
                            kind="kl", topk_ids=scores.topk_ids, **self._to(s_packed)
                        )
                        kl_tok = topk_forward_kl(scores.topk_values, v_k, cfg.loss.temperature)
                        kl_part = kl_sequence_sum(
                            kl_tok, s_packed.weight.to(self.device), cfg.loss.temperature
                        )
                        self.accelerator.backward(kl_part * (kl_weight * scale / n_seq))
                    kl_sum += float(kl_part.detach())
                    mass_sum += float(topk_mass(scores.topk_values, scores.logsumexp).sum())
                    positions += int(kl_tok.numel())
                    at_first = s_packed.first.to(self.device)
                    kl_first += float(kl_tok.detach()[at_first].sum())
                    kl_rest += float(kl_tok.detach()[~at_first].sum())
                    n_first += int(at_first.sum())

        sft_total, kl_total, mass_total, pos_total, kl_first, kl_rest, n_first_f = self._reduce(
            [sft_sum, kl_sum, mass_sum, float(positions), kl_first, kl_rest, float(n_first)]
        )
        n_rest = pos_total - n_first_f
        loss_sft = sft_total / n_tok if use_sft else None
        loss_kl = kl_total / n_seq if use_kl else None

        with _timed(times, "optimizer"):
            lam: float | None = None
            if mode == "raft":
                lam = self.balance.update(float(loss_sft or 0.0), float(loss_kl or 0.0))
            if stash is not None:
                assert lam is not None
                for p, g_sft in zip(self.model.parameters(), stash, strict=True):
                    if p.grad is None:
                        p.grad = g_sft
                    elif g_sft is not None:
                        p.grad.mul_(lam).add_(g_sft)
                    else:
                        p.grad.mul_(lam)
            grad_norm = None
            if cfg.train.max_grad_norm is not None:
                grad_norm = float(
                    self.accelerator.clip_grad_norm_(
                        self.model.parameters(), cfg.train.max_grad_norm
                    )
                )
            lr = float(self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

        elapsed = time.perf_counter() - started
        if mode == "raft":
            total = float(loss_sft or 0.0) + float(lam or 0.0) * float(loss_kl or 0.0)
        else:
            total = float(loss_sft if loss_sft is not None else loss_kl or 0.0)
        weighted_kl = (lam or 0.0) * (loss_kl or 0.0)
        trained = n_tok + traj_tok
        return {
            "step": step + 1,
            "epoch": (step + 1) * cfg.train.batch_size / len(self.data.train),
            "lr": lr,
            "loss": total,
            "loss_sft": loss_sft,
            "loss_kl": loss_kl,
            "lambda": lam,
            "ce_kl_ratio": (loss_sft / weighted_kl)
            if (loss_sft is not None and weighted_kl > 0)
            else None,
            "raw_ce_kl_ratio": (loss_sft / loss_kl) if (loss_sft is not None and loss_kl) else None,
            "topk_mass": (mass_total / pos_total) if pos_total else None,
            "grad_norm": grad_norm,
            "sequences": cfg.train.batch_size,
            "sft_tokens": int(n_tok),
            "trajectory_tokens": int(traj_tok),
            "mean_trajectory_len": (traj_tok / n_seq) if n_seq else None,
            "eos_fraction": (eos_end / n_seq) if n_seq else None,
            "max_new_tokens_fraction": (n_cut / n_seq) if n_seq else None,
            "kl_first_position": (kl_first / n_first_f) if n_first_f else None,
            "kl_other_positions": (kl_rest / n_rest) if n_rest else None,
            "tokens_per_s": trained / elapsed if elapsed > 0 else None,
            "step_s": elapsed,
            "rollout_s": times.rollout,
            "teacher_s": times.teacher,
            "student_s": times.student,
            "optimizer_s": times.optimizer,
            "peak_memory_mb": peak_memory_mb(self.device),
            "skipped_rows": int(sum(self.data.skipped.values())),
        }

    def _open_vllm(self) -> Any:
        """The colocated vLLM rollout engine when `rollout.engine: vllm` and there are rollouts."""
        cfg = self.cfg
        if cfg.rollout.engine != "vllm" or cfg.loss.mode == "sft":
            return None
        if cfg.train.fsdp:
            raise DistillError(
                "rollout.engine: vllm with train.fsdp is not supported yet (the engine needs "
                "the full weights each step); use rollout.engine: transformers"
            )
        from raft_distill.rollout_vllm import VLLMRollout

        return VLLMRollout(
            _resolve(cfg.model.student),
            cfg.rollout,
            seed=cfg.train.seed,
            rank=self.rank,
            local_rank=self.accelerator.local_process_index,
            world=self.world,
        )

    def close(self) -> None:
        """Stop the vLLM engine (if any) now rather than at interpreter exit."""
        if self.vllm is not None:
            self.vllm.close()
            self.vllm = None

    def _gather_params(self) -> Any:
        """FSDP: gather the root weights for generation; None otherwise."""
        if not self.cfg.train.fsdp:
            return None
        return lambda: sharding.gathered(self.model)

    # ------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-mean CE of the SFT target on the held-out rows (all processes share them)."""
        if not self.data.eval:
            return None
        self.model.eval()
        mine = self.data.eval[self.rank :: self.world]
        total = tokens = 0.0
        for j in range(0, len(mine), self.micro_batch):
            packed, n = self._sft_inputs(mine[j : j + self.micro_batch])
            total += float(
                self._student(
                    kind="sft", targets=packed.targets.to(self.device), **self._to(packed)
                )
            )
            tokens += n
        self.model.train()
        total, tokens = self._reduce([total, tokens])
        return total / tokens if tokens else None

    # ------------------------------------------------------------------ loop
    def run(self) -> FitResult:
        self._prepare_output()
        if self.resume:
            self.load_checkpoint()
        self.model.train()
        main = self.accelerator.is_main_process
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.start_step,
            disable=not (main and self.cfg.train.progress),
            desc=f"raft-distill {self.cfg.loss.mode}",
        )
        last: dict[str, Any] = {}
        if self.start_step and self.metrics_path.exists():
            # resumed: the summary's final losses come from the last step even when it was
            # done before the kill (a run killed after its final checkpoint runs no step)
            from raft_distill.plots import read_metrics

            last = (read_metrics(self.metrics_path) or [{}])[-1]
        for step in range(self.start_step, self.total_steps):
            last = self.train_step(step)
            done = step + 1
            if self.cfg.train.eval_every and done % self.cfg.train.eval_every == 0:
                last["eval_loss_sft"] = self.evaluate()
            if main:
                with self.metrics_path.open("a") as handle:
                    handle.write(json.dumps(last) + "\n")
            bar.update(1)
            bar.set_postfix(
                {
                    k: f"{last[k]:.3g}"
                    for k in ("loss_sft", "loss_kl", "lambda")
                    if last.get(k) is not None
                }
            )
            every = self.cfg.train.checkpoint_every
            if every and done % every == 0 and done < self.total_steps:
                self.save_checkpoint(done)
        bar.close()
        eval_loss = self.evaluate()
        ckpt = self.save_checkpoint(self.total_steps)
        final = self.out / "final"
        if main:
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(ckpt / "model", final)
        self.accelerator.wait_for_everyone()
        summary = {
            "mode": self.cfg.loss.mode,
            "steps": self.total_steps,
            "resumed_from": self.start_step if self.resume else None,
            "train_rows": len(self.data.train),
            "eval_rows": len(self.data.eval),
            "source_rows": self.data.source_rows,
            "skipped_rows": dict(self.data.skipped),
            "processes": self.world,
            "rollout_engine": self.cfg.rollout.engine if self.cfg.loss.mode != "sft" else None,
            "distributed": "FSDP"
            if self.cfg.train.fsdp
            else str(self.accelerator.distributed_type.value),  # NO, MULTI_CPU, MULTI_GPU
            "bf16": self.bf16,
            "final_loss_sft": last.get("loss_sft"),
            "final_loss_kl": last.get("loss_kl"),
            "final_lambda": last.get("lambda"),
            "eval_loss_sft": eval_loss,
            "peak_memory_mb": peak_memory_mb(self.device),
            "final_model": str(final),
        }
        if main:
            from raft_distill.plots import plot_metrics

            _atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
            summary["plots"] = [str(p) for p in plot_metrics(self.metrics_path, self.out)]
        return FitResult(self.out, self.total_steps, final, self.metrics_path, summary, main)


def fit(cfg: FitConfig, resume: bool = False) -> FitResult:
    """Run `raft-distill fit` for a validated config; see the module docstring."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.close()

"""The stage-2 loop: sample -> teacher score -> student score -> loss -> step.

Each optimizer step, as in docs/METHOD.md stage 2, is `Trainer.train_step`, read phase by
phase:
1. `_rollout`: the student samples one trajectory z per prompt x (`rollout`);
2. `_teacher_scores`: the frozen teacher scores z under the answer-conditioned context
   (`teacher`);
3. `_sft_backward`: the student's token-mean CE on y^ given x, and its backward (`loss`);
4. `_kl_backward`: the student scores z given x alone, giving the top-K temperature KL,
   and its backward (`loss`);
5. `_balance` + `_optimizer_step`: lambda from the bias-corrected EMA of both full-step
   losses (`balance`), g = g_SFT + lambda * g_KL, one AdamW step;
6. `_metrics`: the row of metrics.jsonl (and the trackers).

Every loss piece is divided by the number of sequences (KL) or target tokens (SFT) of the
whole step over all micro-batches and processes, so the loss, its gradient and lambda do
not depend on the micro-batch split. Because lambda needs the full-step losses before it
can weight the KL gradient, the SFT and KL gradients are accumulated in two phases and
combined as g = g_SFT + lambda * g_KL (exact, one extra gradient buffer). The same code
runs on one CPU, under `torchrun`/`accelerate launch` with DDP, and with FSDP2 (sharding.py).
`Trainer.__init__` is its `_build_*` steps, in order: accelerator, models, data, student,
rollout engine, optimizer and scheduler, balance. Each decision that changes the result is
logged once (`raft_distill/log.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from raft_distill import lora, rollout, sharding, teacher
from raft_distill.balance import EmaBalance, FixedBalance
from raft_distill.config import FitConfig
from raft_distill.data import (
    FALLBACK_PROMPT,
    Dataset,
    Example,
    build_dataset,
    load_rows,
    step_indices,
)
from raft_distill.errors import DistillError
from raft_distill.head import check_head
from raft_distill.log import run_log
from raft_distill.loss import kl_sequence_sum, topk_forward_kl, topk_mass
from raft_distill.student import StudentScorer, apply_tf32, autocast_supported

log = logging.getLogger(__name__)

# Keys that may change on --resume without changing what the run means.
RESUMABLE_KEYS = {
    "max_steps",
    "epochs",
    "checkpoint_every",
    "checkpoint_limit",
    "eval_every",
    "progress",
    "report_to",
}
TRACKER_PROJECT = "raft-distill"  # the W&B project; TensorBoard's folder under tensorboard/


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


@dataclass
class StepCounts:
    """One step's sizes over all processes: the loss denominators and rollout figures."""

    sequences: float  # KL sequences (0 without the KL term): L_KL's denominator
    sft_tokens: float  # target tokens of y^ (0 without the SFT term): L_SFT's denominator
    trajectory_tokens: float
    eos_ended: float  # z that ended with an eos
    cut: float  # z cut at rollout.max_new_tokens, not by an eos


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


@contextlib.contextmanager
def _timed(times: StepTimes, name: str) -> Iterator[None]:
    start = time.perf_counter()
    with torch.profiler.record_function(f"raft_distill.{name}"):  # phases in a profiler's trace
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
    where = "" if str(student_path) == cfg.model.student else f" ({student_path})"
    log.info(f"student: {cfg.model.student}{where}")
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        log.info("the tokenizer has no pad token: padding with eos %r", tokenizer.eos_token)
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    check_head(student, cfg.model.student)
    teacher_model = None
    if cfg.loss.mode == "sft":
        log.info("loss.mode sft: no teacher loaded, no rollouts")
        return tokenizer, student, teacher_model
    teacher_path = _resolve(cfg.teacher_name)
    if cfg.train.lora is not None and teacher_path == student_path:
        log.info("teacher: the student's base weights with the LoRA adapters disabled (one copy)")
        return tokenizer, student, teacher_model
    if teacher_path != student_path:
        log.info("teacher: %s (%s), frozen", cfg.teacher_name, teacher_path)
        t_tok = AutoTokenizer.from_pretrained(teacher_path)
        if t_tok.get_vocab() != tokenizer.get_vocab():
            raise DistillError(
                f"teacher '{cfg.teacher_name}' and student '{cfg.model.student}' have "
                "different tokenizer vocabularies; top-K distillation needs the same ids"
            )
    else:
        log.info("teacher: a frozen copy of the student's starting weights (model.teacher unset)")
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


def adamw_kwargs(params: Sequence[torch.Tensor], fsdp: bool) -> dict[str, Any]:
    """{"fused": True} where torch has a fused AdamW for the parameters' device (CPU and
    CUDA in torch 2.13: ~6x faster than the for-loop default on CPU, same steps to 3e-8;
    benchmarks/adamw.py, docs/benchmarks.md), else {} (torch's own default). FSDP2's DTensor
    shards keep torch's default: fused there is not tested here."""
    try:  # private in torch 2.13; a torch without it keeps the default implementation
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:
        return {}
    devices = {p.device.type for p in params}
    floating = all(torch.is_floating_point(p) for p in params)
    if fsdp or not params or not floating or len(devices) != 1:
        return {}
    return {"fused": True} if devices <= set(_get_fused_kernels_supported_devices()) else {}


def _eos_ids(tokenizer: Any, lm: Any) -> set[int]:
    """Token ids that end a trajectory: the tokenizer's eos and the generation config's."""
    eos = {int(tokenizer.eos_token_id)}
    gen_eos = getattr(lm.generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif isinstance(gen_eos, list):
        eos.update(int(e) for e in gen_eos)
    return eos


def tracker_names(cfg: FitConfig) -> list[str]:
    """`train.report_to` resolved: unset = TensorBoard when installed; a named tracker that
    is not installed is an error (accelerate would skip it without a word)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    installed = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    wanted = cfg.train.report_to
    if wanted is None:
        if installed["tensorboard"]:
            return ["tensorboard"]
        log.info(
            "train.report_to unset and tensorboard is not installed: metrics.jsonl only "
            "(`pip install tensorboard`, or set train.report_to: [] to silence this)"
        )
        return []
    missing = [name for name in wanted if not installed[name]]
    if missing:
        raise DistillError(
            f"train.report_to names {', '.join(missing)}, which is not installed: "
            f"`pip install {' '.join(missing)}`, or remove it from train.report_to"
        )
    return list(dict.fromkeys(wanted))


def make_accelerator(cfg: FitConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # accelerate sets up the processes (gloo on CPU only with cpu=True) and DDP; FSDP is
    # applied by sharding.py, since accelerate's FSDP plugin does not run on CPU processes
    cpu = not torch.cuda.is_available()
    out = Path(cfg.train.output_dir)
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard"))
    accelerator = Accelerator(
        step_scheduler_with_optimizer=False,
        cpu=cpu,
        log_with=tracker_names(cfg) or None,
        project_config=project,
    )
    if cfg.train.fsdp and accelerator.num_processes < 2:
        raise DistillError(
            "train.fsdp shards the student over processes: launch with `torchrun "
            "--nproc_per_node=N -m raft_distill fit ...` or `accelerate launch`, N >= 2"
        )
    return accelerator


def _flat_config(cfg: FitConfig) -> dict[str, Any]:
    """`section.key: value` with scalar values, as TensorBoard's hparams and W&B take them."""
    flat: dict[str, Any] = {}
    for section, values in cfg.model_dump(mode="json", by_alias=True).items():
        for key, value in values.items():
            scalar = isinstance(value, (bool, int, float, str))
            flat[f"{section}.{key}"] = value if scalar else json.dumps(value)
    return flat


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _comparable(cfg: FitConfig) -> dict[str, Any]:
    raw = cfg.model_dump(mode="json", by_alias=True)
    for key in RESUMABLE_KEYS:
        raw["train"].pop(key, None)
    return raw


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints (their trainer_state.json is written last), oldest first."""
    found = []
    for path in (output_dir / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", path.name)
        if m and (path / "trainer_state.json").exists():
            found.append((int(m.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (train.checkpoint_limit); returns
    the deleted folders. trainer_state.json goes first, so a crash mid-delete leaves a folder
    that `latest_checkpoint` already ignores."""
    old = complete_checkpoints(output_dir)[:-keep] if keep > 0 else []
    for path in old:
        (path / "trainer_state.json").unlink()
        shutil.rmtree(path)
        log.info("checkpoint_limit %d: deleted %s", keep, path)
    return old


def _link_or_copy(src: str, dst: str) -> str:
    """final/ shares the last checkpoint's files (a hard link: no second copy of the weights;
    every save writes new files, never into old ones); a copy where links are not allowed."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class Trainer:
    """Holds the models, data and state of one `fit` run; `run()` is the loop."""

    def __init__(self, cfg: FitConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(cfg.train.output_dir)
        self.resume = resume
        self.metrics_path = self.out / "metrics.jsonl"
        self.start_step = 0
        self.use_kl = cfg.loss.mode in ("raft", "on-policy")
        self.use_sft = cfg.loss.mode in ("raft", "sft")
        self._check_lora()
        self._build_accelerator()
        lm = self._build_models()
        self._build_data()
        self._build_student(lm)
        self.vllm = self._open_vllm()
        self._vllm_synced_step: int | None = None
        self._build_optimizer()
        self._build_balance()

    # ----------------------------------------------------------------- setup
    def _build_accelerator(self) -> None:
        """Processes (one, DDP or FSDP), device, the batch split, bf16 autocast."""
        t = self.cfg.train
        self.accelerator = make_accelerator(self.cfg)
        self.device = self.accelerator.device
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self._plan_batches()
        kind = "FSDP" if t.fsdp else ("DDP" if self.world > 1 else "no data parallelism")
        log.info(
            f"{self.world} process(es), {kind}, device {self.device.type}; batch "
            f"{t.batch_size} = {self.world} x {t.gradient_accumulation_steps} micro-batch(es) "
            f"of {self.micro_batch}"
        )
        self.bf16 = t.bf16 and autocast_supported(self.device)
        if t.bf16 and not self.bf16:
            log.warning(
                "train.bf16 is on but %s has no bf16 autocast: training in float32", self.device
            )
        else:
            log.info("precision: %s", "bf16 autocast" if self.bf16 else "float32 (train.bf16 off)")
        self.tf32 = apply_tf32(t.tf32, self.device)
        if self.device.type == "cuda":
            log.info("float32 matmuls (the loss's lm_head chunks): %s", "TF32" if self.tf32 else "full float32 (train.tf32)")

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

    def _build_models(self) -> Any:
        """Tokenizer, teacher and the student's LM (returned, to be wrapped)."""
        self.tokenizer, lm, self.teacher_model = load_models(self.cfg)
        self.eos_ids = _eos_ids(self.tokenizer, lm)
        self.pad_id = int(self.tokenizer.pad_token_id)
        log.debug("eos ids %s, pad id %d", sorted(self.eos_ids), self.pad_id)
        return lm

    def _check_lora(self) -> None:
        """train.lora's combinations that are not supported, refused before loading."""
        cfg = self.cfg
        if cfg.train.lora is None:
            return
        if cfg.train.fsdp:
            raise DistillError(
                "train.lora with train.fsdp is not supported (FSDP2 sharding of the peft "
                "model is untested here); use LoRA on one process or DDP, or remove train.lora"
            )

    def _build_data(self) -> None:
        """Rows -> tokenized train/eval examples; the number of optimizer steps."""
        cfg = self.cfg
        rows, _ = load_rows(cfg.data.path, cfg.data.revision)
        self.data: Dataset = build_dataset(
            rows, self.tokenizer, cfg.data, cfg.loss, cfg.teacher, source=cfg.data.path
        )
        skipped = dict(self.data.skipped)
        if not self.data.train:
            raise DistillError(
                f"{cfg.data.path}: no training rows left after filtering "
                f"(skipped: {skipped}, eval: {len(self.data.eval)})"
            )
        d = self.data
        log.info(
            f"data {cfg.data.path}: {d.source_rows} rows -> {len(d.train)} train, "
            f"{len(d.eval)} eval, {sum(skipped.values())} skipped {skipped or ''}"
        )
        if not getattr(self.tokenizer, "chat_template", None):
            log.warning(
                "the student's tokenizer has no chat template: prompts are plain text "
                f"{FALLBACK_PROMPT!r}, and so is the teacher context (teacher.format plain)"
            )
        if cfg.loss.mode == "on-policy":
            log.info("teacher context: the student's own prompt (loss.mode on-policy)")
        else:
            log.info(f"teacher context: y^ and x, teacher.format {cfg.teacher.format}")
        self.total_steps = cfg.train.max_steps or math.ceil(
            cfg.train.epochs * len(self.data.train) / cfg.train.batch_size
        )
        how = "train.max_steps" if cfg.train.max_steps else f"{cfg.train.epochs} epochs"
        log.info("%d optimizer steps (%s)", self.total_steps, how)

    def _build_student(self, lm: Any) -> None:
        """The student scorer on its device (sharded under FSDP); the teacher beside it."""
        cfg = self.cfg
        if cfg.train.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            log.info("gradient checkpointing on")
        lm.config.use_cache = False
        if self.teacher_model is not None:
            self.teacher_model.to(self.device)
        self.peft: Any = None  # the PeftModel around lm with train.lora; lm holds its adapters
        if cfg.train.lora is not None:
            self.peft = lora.add_adapters(lm, cfg.train.lora, cfg.train.seed)
            trained = sum(p.numel() for p in lm.parameters() if p.requires_grad)
            total = sum(p.numel() for p in lm.parameters())
            log.info(
                f"LoRA r {cfg.train.lora.r}, alpha {cfg.train.lora.alpha}, dropout "
                f"{cfg.train.lora.dropout}, target_modules {cfg.train.lora.target_modules!r}: "
                f"{trained:,} of {total:,} parameters train"
            )
        self.model = StudentScorer(lm, chunk=cfg.loss.logit_chunk_size)
        if cfg.train.fsdp:
            sharding.shard_student(self.model, self.device)

    def _build_optimizer(self) -> None:
        """AdamW (weight decay on matrices only) and the learning-rate schedule."""
        t = self.cfg.train
        trained = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: the adapters
        decay = [p for p in trained if p.ndim >= 2]
        no_decay = [p for p in trained if p.ndim < 2]
        impl = adamw_kwargs(trained, t.fsdp)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": t.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=t.lr,
            betas=t.adam_betas,
            eps=t.adam_eps,
            **impl,
        )
        log.info("AdamW: %s", "torch's fused kernel" if impl else "torch's default implementation")
        if t.fsdp:
            # not handed to accelerate: sharding.py saves and restores the sharded state
            self.optimizer = optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        from transformers import get_scheduler

        try:
            self.scheduler = get_scheduler(
                t.lr_scheduler,
                self.optimizer,
                num_warmup_steps=t.warmup_steps,
                num_training_steps=self.total_steps,
            )
        except ValueError as err:
            raise DistillError(f"train.lr_scheduler: {err}") from None
        self.accelerator.register_for_checkpointing(self.scheduler)
        log.debug("AdamW lr %g, %s schedule, %d warmup steps", t.lr, t.lr_scheduler, t.warmup_steps)
        if self.peft is not None:
            self._save_adapters_only()
        elif not self.cfg.train.fsdp:
            self._weights_in_model_folder_only()

    def _weights_in_model_folder_only(self) -> None:
        """Full fine-tuning: a checkpoint's weights live once, in its model/ folder (the HF
        folder users load); state/ keeps the optimizer, scheduler and RNG. Saving them in
        state/ too doubled every checkpoint (a 70B model in fp32: 280 GB more each)."""

        def drop_weights(models: Any, weights: list[dict[str, Any]], output_dir: str) -> None:
            weights.clear()

        def load_from_model_folder(models: list[Any], input_dir: str) -> None:
            state = Path(input_dir)
            if any(state.glob("model*.safetensors")) or any(state.glob("pytorch_model*.bin")):
                return  # a checkpoint from before this layout: accelerate loads state/
            from accelerate.utils import load_checkpoint_in_model
            from safetensors import safe_open

            folder = state.parent / "model"
            lm = self.accelerator.unwrap_model(self.model).lm
            saved: set[str] = set()
            for file in folder.glob("*.safetensors"):
                with safe_open(str(file), framework="pt") as f:
                    saved.update(f.keys())
            # a tied head is one parameter under two names: named_parameters() lists it once
            missing = sorted({n for n, _ in lm.named_parameters()} - saved)
            if missing:
                raise DistillError(
                    f"--resume: {folder} has no weights for {len(missing)} parameter(s) "
                    f"({', '.join(missing[:3])}); that checkpoint is incomplete or from another "
                    "model: delete it to resume from the one before"
                )
            load_checkpoint_in_model(lm, str(folder), strict=False)
            models.clear()

        self.accelerator.register_save_state_pre_hook(drop_weights)
        self.accelerator.register_load_state_pre_hook(load_from_model_folder)

    def _save_adapters_only(self) -> None:
        """LoRA: a checkpoint's state/ keeps the trained adapters, not the frozen base
        weights (they never change; --resume reloads them from the model, then the
        adapters from state/ with strict=False)."""
        trained = {n for n, p in self.model.named_parameters() if p.requires_grad}

        def keep_trained(models: Any, weights: list[dict[str, Any]], output_dir: str) -> None:
            for state in weights:
                for key in [k for k in state if k not in trained]:
                    del state[key]

        self.accelerator.register_save_state_pre_hook(keep_trained)

    def _build_balance(self) -> None:
        """lambda: the EMA balance (two gradient phases) or a fixed value (one phase)."""
        loss = self.cfg.loss
        self.balance: EmaBalance | FixedBalance
        if loss.lambda_ == "ema":
            self.balance = EmaBalance(beta=loss.ema_beta, eps=loss.eps)
        else:
            self.balance = FixedBalance(float(loss.lambda_))
        # lambda is known only after both full-step losses: keep g_SFT apart meanwhile
        self.two_phase = loss.mode == "raft" and isinstance(self.balance, EmaBalance)
        if loss.mode == "raft":
            log.info(
                "lambda: %s",
                f"EMA, beta {loss.ema_beta}" if self.two_phase else f"fixed {loss.lambda_}",
            )

    def _open_vllm(self) -> Any:
        """The colocated vLLM rollout engine when `rollout.engine: vllm` and there are rollouts."""
        cfg = self.cfg
        if not self.use_kl:
            return None
        r = cfg.rollout
        log.info(
            f"rollouts: {r.engine} engine, temperature {r.temperature}, top_p {r.top_p}, "
            f"top_k {r.top_k}, max_new_tokens {r.max_new_tokens}"
        )
        if r.engine != "vllm":
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
            elif self.metrics_path.exists():
                # a fresh run starts a fresh metrics file (a resumed one is cut at its checkpoint)
                self.metrics_path.unlink()
                log.info("fresh run: the old %s removed", self.metrics_path)
            _atomic_write_text(saved, config_text)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------ checkpoints
    def save_model(self, folder: Path) -> None:
        """A plain HF folder (safetensors + config + tokenizer) that transformers loads; with
        train.lora, the merged model there (unless merge_on_save is off) and adapter/."""
        unwrapped = self.accelerator.unwrap_model(self.model).lm
        if self.peft is not None:
            if self.accelerator.is_main_process:
                unwrapped.config.use_cache = True
                lora.save(self.peft, folder, merged=bool(self.cfg.train.lora.merge_on_save))  # type: ignore[union-attr]
                unwrapped.config.use_cache = False
                self.tokenizer.save_pretrained(folder)
            return
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
            if self.cfg.train.checkpoint_limit:
                prune_checkpoints(self.out, self.cfg.train.checkpoint_limit)
        self.accelerator.wait_for_everyone()
        log.debug("checkpoint %s", folder)
        return folder

    def load_checkpoint(self) -> None:
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            raise DistillError(f"--resume: no complete checkpoint under {self.out}/checkpoints")
        # LoRA: state/ holds the adapters only (`_save_adapters_only`)
        self.accelerator.load_state(str(ckpt / "state"), strict=self.peft is None)
        if self.cfg.train.fsdp:
            sharding.load_sharded(ckpt / "fsdp", self.model, self.optimizer)
        state = json.loads((ckpt / "trainer_state.json").read_text())
        self.balance.load_state_dict(state["balance"])
        self.start_step = int(state["step"])
        log.info("resumed from %s: step %d of %d", ckpt, self.start_step, self.total_steps)
        if self.accelerator.is_main_process and self.metrics_path.exists():
            lines = self.metrics_path.read_text().splitlines()
            kept = [
                line
                for line in lines
                if line.strip() and json.loads(line).get("step", 0) <= self.start_step
            ]
            _atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
            if len(kept) < len(lines):
                log.info(
                    "%s: %d rows after the checkpoint dropped",
                    self.metrics_path,
                    len(lines) - len(kept),
                )

    # ------------------------------------------------------------------ step
    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step over the global batch of `step`; returns its metrics.

        Phases in order: rollout z, global counts, SFT backward, (EMA: g_SFT set aside),
        teacher scores + KL backward per micro-batch, the full-step losses, lambda and the
        combined gradient, the AdamW step, the metrics row.
        """
        times = StepTimes()
        started = time.perf_counter()
        examples = self._local_examples(step)
        micro = [
            examples[j : j + self.micro_batch] for j in range(0, len(examples), self.micro_batch)
        ]
        trajectories = self._rollout(step, examples, times) if self.use_kl else []
        counts = self._count(examples, trajectories)
        sft_sum = self._sft_backward(micro, counts.sft_tokens, times) if self.use_sft else 0.0
        stash = self._set_aside_gradients() if self.two_phase else None
        kl = KLSums()
        if self.use_kl:
            kl = self._kl_backward(micro, trajectories, counts.sequences, times)
        sft_total, *kl_totals = self._reduce(
            [sft_sum, kl.kl, kl.mass, kl.positions, kl.first, kl.rest, kl.n_first]
        )
        kl = KLSums(*kl_totals)
        loss_sft = sft_total / counts.sft_tokens if self.use_sft else None
        loss_kl = kl.kl / counts.sequences if self.use_kl else None
        with _timed(times, "optimizer"):
            lam = self._balance(loss_sft, loss_kl, stash)
            grad_norm, lr = self._optimizer_step()
        losses = {"loss_sft": loss_sft, "loss_kl": loss_kl, "lambda": lam}
        elapsed = time.perf_counter() - started
        return self._metrics(step, losses, counts, kl, grad_norm, lr, times, elapsed)

    def _local_examples(self, step: int) -> list[Example]:
        """This process's share of the step's global batch (rows fixed by the step alone)."""
        t = self.cfg.train
        indices = step_indices(step, t.batch_size, len(self.data.train), t.seed)
        mine = indices[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        return [self.data.train[i] for i in mine]

    def _rollout(self, step: int, examples: list[Example], times: StepTimes) -> list[list[int]]:
        """Phase 1: one trajectory z ~ S(. | x) per prompt, seeded by (seed, step, rank)."""
        seed = _step_seed(self.cfg.train.seed, step, self.rank)
        prompts = [e.prompt_ids for e in examples]
        if self.vllm is not None:
            with _timed(times, "rollout"):
                if self._vllm_synced_step != step:  # the weights changed since the last rollout
                    lm = self.accelerator.unwrap_model(self.model).lm
                    # LoRA: the merged weights W + (alpha / r) B A, computed afresh
                    weights = lora.merged_parameters(self.peft) if self.peft else None
                    self.vllm.sync_weights(weights or lm.named_parameters())
                    self._vllm_synced_step = step
                trajectories: list[list[int]] = self.vllm.sample(prompts, self.eos_ids, seed)
            return trajectories
        torch.manual_seed(seed)
        with _timed(times, "rollout"):
            return rollout.sample_trajectories(
                self.accelerator.unwrap_model(self.model).lm,
                prompts,
                self.cfg.rollout,
                self.pad_id,
                self.eos_ids,
                self.device,
                autocast=self.bf16,
                gather_params=self._gather_params(),
            )

    def _count(self, examples: list[Example], trajectories: list[list[int]]) -> StepCounts:
        """The step's sizes summed over processes: the loss denominators come first."""
        sft_tokens = sum(len(e.target_ids) for e in examples) if self.use_sft else 0
        max_new = self.cfg.rollout.max_new_tokens  # z cut there, not by eos: a truncated answer
        eos = self.eos_ids
        n_cut = sum(1 for z in trajectories if len(z) >= max_new and z[-1] not in eos)
        values = [
            float(len(examples)) if self.use_kl else 0.0,
            float(sft_tokens),
            float(sum(len(z) for z in trajectories)),
            float(sum(1 for z in trajectories if z and z[-1] in eos)),
            float(n_cut),
        ]
        return StepCounts(*self._reduce(values))

    def _sft_backward(self, micro: list[list[Example]], n_tok: float, times: StepTimes) -> float:
        """Phase 3: CE of S on y^ given x, teacher-forced; the backward of its share of L_SFT
        (sum / the step's target tokens). Returns this process's CE sum."""
        scale = float(self.world)  # DDP/FSDP average gradients over processes
        sft_sum = 0.0
        with _timed(times, "student"):
            for j, batch in enumerate(micro):
                packed, _ = self._sft_inputs(batch)
                with self._sync(j == len(micro) - 1):
                    ce_sum = self._student(
                        kind="sft", targets=packed.targets.to(self.device), **self._to(packed)
                    )
                    self.accelerator.backward(ce_sum * (scale / n_tok))
                sft_sum += float(ce_sum.detach())
        return sft_sum

    def _set_aside_gradients(self) -> list[torch.Tensor | None]:
        """g_SFT kept apart while g_KL accumulates: lambda needs both full-step losses."""
        stash = [
            None if p.grad is None else p.grad.detach().clone() for p in self.model.parameters()
        ]
        self.optimizer.zero_grad(set_to_none=True)
        return stash

    def _teacher_scores(self, batch: list[Example], z: list[list[int]]) -> teacher.TeacherScores:
        """Phase 2: the frozen teacher's top-K logits (and logsumexp) at each position of z,
        read after its context (y^ and x, or x alone in on-policy mode)."""
        cfg = self.cfg.loss
        packed = teacher.pack([e.teacher_ids for e in batch], z, self.pad_id)
        base = self.teacher_model is None  # LoRA: the student's base, adapters disabled
        with lora.adapters_off(self.peft) if base else contextlib.nullcontext(self.teacher_model) as model:
            return teacher.score(
                model,
                packed,
                cfg.top_k,
                cfg.logit_chunk_size,
                self.device,
                autocast=self.bf16,
            )

    def _kl_backward(
        self,
        micro: list[list[Example]],
        trajectories: list[list[int]],
        n_seq: float,
        times: StepTimes,
    ) -> KLSums:
        """Phase 4: per micro-batch, teacher scores then the student's top-K KL on z given x,
        and the backward of its share of L_KL (weighted by a fixed lambda in one-phase
        mode). Returns this process's sums."""
        mode = self.cfg.loss.mode
        kl_weight = self.balance.lam if (mode == "raft" and not self.two_phase) else 1.0
        factor = kl_weight * float(self.world) / n_seq
        sums = KLSums()
        start = 0
        for j, batch in enumerate(micro):
            z = trajectories[start : start + len(batch)]
            start += len(batch)
            with _timed(times, "teacher"):
                scores = self._teacher_scores(batch, z)
            with _timed(times, "student"):
                self._kl_micro_batch(batch, z, scores, j == len(micro) - 1, factor, sums)
        return sums

    def _kl_micro_batch(
        self,
        batch: list[Example],
        z: list[list[int]],
        scores: teacher.TeacherScores,
        last: bool,
        factor: float,
        sums: KLSums,
    ) -> None:
        """The student's gathered logits at the teacher's top-K ids, the KL, its backward."""
        temperature = self.cfg.loss.temperature
        packed = teacher.pack([e.prompt_ids for e in batch], z, self.pad_id)
        with self._sync(last):
            v_k = self._student(kind="kl", topk_ids=scores.topk_ids, **self._to(packed))
            kl_tok = topk_forward_kl(scores.topk_values, v_k, temperature)
            kl_part = kl_sequence_sum(kl_tok, packed.weight.to(self.device), temperature)
            self.accelerator.backward(kl_part * factor)
        sums.kl += float(kl_part.detach())
        sums.mass += float(topk_mass(scores.topk_values, scores.logsumexp).sum())
        sums.positions += int(kl_tok.numel())
        at_first = packed.first.to(self.device)
        sums.first += float(kl_tok.detach()[at_first].sum())
        sums.rest += float(kl_tok.detach()[~at_first].sum())
        sums.n_first += int(at_first.sum())

    def _balance(
        self,
        loss_sft: float | None,
        loss_kl: float | None,
        stash: list[torch.Tensor | None] | None,
    ) -> float | None:
        """Phase 5a: lambda from this step's losses (raft mode); with the EMA, the gradient
        becomes g = g_SFT + lambda * g_KL (g_KL is in p.grad, g_SFT in `stash`)."""
        if self.cfg.loss.mode != "raft":
            return None
        lam = self.balance.update(float(loss_sft or 0.0), float(loss_kl or 0.0))
        if stash is not None:
            for p, g_sft in zip(self.model.parameters(), stash, strict=True):
                if p.grad is None:
                    p.grad = g_sft
                elif g_sft is not None:
                    p.grad.mul_(lam).add_(g_sft)
                else:
                    p.grad.mul_(lam)
        return lam

    def _optimizer_step(self) -> tuple[float | None, float]:
        """Phase 5b: clip, AdamW step, schedule step; returns the gradient norm before
        clipping and the learning rate the step used."""
        max_norm = self.cfg.train.max_grad_norm
        grad_norm = None
        if max_norm is not None:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
        lr = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, lr

    def _metrics(
        self,
        step: int,
        losses: dict[str, float | None],
        counts: StepCounts,
        kl: KLSums,
        grad_norm: float | None,
        lr: float,
        times: StepTimes,
        elapsed: float,
    ) -> dict[str, Any]:
        """Phase 6: the step's row of metrics.jsonl (summed over processes)."""
        loss_sft, loss_kl, lam = losses["loss_sft"], losses["loss_kl"], losses["lambda"]
        if self.cfg.loss.mode == "raft":
            total = float(loss_sft or 0.0) + float(lam or 0.0) * float(loss_kl or 0.0)
        else:
            total = float(loss_sft if loss_sft is not None else loss_kl or 0.0)
        weighted_kl = (lam or 0.0) * (loss_kl or 0.0)
        n_seq, n_rest = counts.sequences, kl.positions - kl.n_first
        batch_size = self.cfg.train.batch_size
        return {
            "step": step + 1,
            "epoch": (step + 1) * batch_size / len(self.data.train),
            "lr": lr,
            "loss": total,
            "loss_sft": loss_sft,
            "loss_kl": loss_kl,
            "lambda": lam,
            "ce_kl_ratio": (loss_sft / weighted_kl)
            if (loss_sft is not None and weighted_kl > 0)
            else None,
            "raw_ce_kl_ratio": (loss_sft / loss_kl) if (loss_sft is not None and loss_kl) else None,
            "topk_mass": (kl.mass / kl.positions) if kl.positions else None,
            "grad_norm": grad_norm,
            "sequences": batch_size,
            "sft_tokens": int(counts.sft_tokens),
            "trajectory_tokens": int(counts.trajectory_tokens),
            "mean_trajectory_len": (counts.trajectory_tokens / n_seq) if n_seq else None,
            "eos_fraction": (counts.eos_ended / n_seq) if n_seq else None,
            "max_new_tokens_fraction": (counts.cut / n_seq) if n_seq else None,
            "kl_first_position": (kl.first / kl.n_first) if kl.n_first else None,
            "kl_other_positions": (kl.rest / n_rest) if n_rest else None,
            "tokens_per_s": (counts.sft_tokens + counts.trajectory_tokens) / elapsed
            if elapsed > 0
            else None,
            "step_s": elapsed,
            "rollout_s": times.rollout,
            "teacher_s": times.teacher,
            "student_s": times.student,
            "optimizer_s": times.optimizer,
            "peak_memory_mb": peak_memory_mb(self.device),
            "skipped_rows": int(sum(self.data.skipped.values())),
        }

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

    def _gather_params(self) -> Any:
        """FSDP: gather the root weights for generation; None otherwise."""
        if not self.cfg.train.fsdp:
            return None
        return lambda: sharding.gathered(self.model)

    def close(self) -> None:
        """Stop the vLLM engine (if any) and the trackers now, not at interpreter exit."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        if self.vllm is not None:
            self.vllm.close()
            self.vllm = None

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
        self._start_trackers()
        self.model.train()
        last = self._train_loop()
        return self._finish(last)

    def _start_trackers(self) -> None:
        """TensorBoard / W&B through accelerate (main process), with the flat config."""
        names = [str(t) for t in self.accelerator.log_with]
        if not names:
            log.info("trackers: none (train.report_to); metrics in %s", self.metrics_path)
            return
        init_kwargs: dict[str, dict[str, Any]] = {
            "wandb": {"dir": str(self.out), "name": self.out.name}
        }
        if self.start_step:  # TensorBoard drops the steps logged after the checkpoint
            init_kwargs["tensorboard"] = {"purge_step": self.start_step + 1}
        self.accelerator.init_trackers(TRACKER_PROJECT, _flat_config(self.cfg), init_kwargs)
        where = self.out / "tensorboard" / TRACKER_PROJECT
        log.info("trackers: %s (TensorBoard events in %s)", ", ".join(names), where)

    def _train_loop(self) -> dict[str, Any]:
        """Steps from the start (or resume) step to the end; returns the last metrics row."""
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
            self._record(last)
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
        return last

    def _record(self, row: dict[str, Any]) -> None:
        """One step's row: metrics.jsonl, the trackers (numbers only), the log file."""
        if self.accelerator.is_main_process:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        numbers = {
            k: v
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.accelerator.log(numbers, step=row["step"])
        log.debug(
            "step %d: %s",
            row["step"],
            ", ".join(
                f"{k} {row[k]:.6g}"
                for k in ("loss", "loss_sft", "loss_kl", "lambda")
                if row.get(k) is not None
            ),
        )

    def _finish(self, last: dict[str, Any]) -> FitResult:
        """Held-out loss, the final checkpoint and model, summary.json and the plots."""
        eval_loss = self.evaluate()
        ckpt = self.save_checkpoint(self.total_steps)
        final = self.out / "final"
        main = self.accelerator.is_main_process
        if main:
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(ckpt / "model", final, copy_function=_link_or_copy)
        self.accelerator.wait_for_everyone()
        summary = self._summary(last, eval_loss, final)
        if main:
            from raft_distill.plots import plot_metrics

            _atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
            summary["plots"] = [str(p) for p in plot_metrics(self.metrics_path, self.out)]
        log.info(
            "done: %d steps, final model %s, summary %s",
            self.total_steps,
            final,
            self.out / "summary.json",
        )
        return FitResult(self.out, self.total_steps, final, self.metrics_path, summary, main)

    def _summary(
        self, last: dict[str, Any], eval_loss: float | None, final: Path
    ) -> dict[str, Any]:
        distributed = self.accelerator.distributed_type.value  # NO, MULTI_CPU, MULTI_GPU
        return {
            "mode": self.cfg.loss.mode,
            "steps": self.total_steps,
            "resumed_from": self.start_step if self.resume else None,
            "train_rows": len(self.data.train),
            "eval_rows": len(self.data.eval),
            "source_rows": self.data.source_rows,
            "skipped_rows": dict(self.data.skipped),
            "processes": self.world,
            "rollout_engine": self.cfg.rollout.engine if self.cfg.loss.mode != "sft" else None,
            "distributed": "FSDP" if self.cfg.train.fsdp else str(distributed),
            "bf16": self.bf16,
            "tf32": self.tf32,
            "final_loss_sft": last.get("loss_sft"),
            "final_loss_kl": last.get("loss_kl"),
            "final_lambda": last.get("lambda"),
            "eval_loss_sft": eval_loss,
            "peak_memory_mb": peak_memory_mb(self.device),
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

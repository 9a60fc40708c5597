"""Building one `fit` run: the accelerator, the models, the data, the student, the rollout
engine, the optimizer and schedule, and lambda's balance, in that order (`build_run`).

What it builds is a `FitRun`: every part the stage-2 step (`raft_distill/step.py`) and the
loop (`raft_distill/train.py`) use, and the few device helpers they share (autocast, moving
a pack to the device, sums over processes, gradient sync). Each decision that changes the
result is logged once here (`raft_distill/log.py`); refusals (LoRA with FSDP, vLLM with
FSDP, a batch that does not split) come before any model is loaded where they can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raft_distill import lora, sharding, teacher
from raft_distill.balance import EmaBalance, FixedBalance
from raft_distill.config import FitConfig
from raft_distill.data import FALLBACK_PROMPT, Dataset, Example, build_dataset, load_rows
from raft_distill.errors import DistillError
from raft_distill.head import check_head
from raft_distill.loss import reference_weights
from raft_distill.student import StudentScorer, apply_tf32, autocast_supported

log = logging.getLogger(__name__)


@dataclass
class FitRun:
    """One fit run's parts, as `build_run` makes them; the step and the loop read them."""

    cfg: FitConfig
    accelerator: Any
    world: int  # processes
    rank: int
    local_batch: int  # this process's rows per step
    micro_batch: int
    bf16: bool  # autocast on (train.bf16 and the device has it)
    tf32: bool
    tokenizer: Any
    eos_ids: set[int]
    pad_id: int
    teacher_model: Any  # None in sft mode, and with LoRA on the student's own base
    peft: Any  # the PeftModel around the student's LM with train.lora, else None
    model: Any  # the StudentScorer (DDP-prepared, or FSDP-sharded)
    data: Dataset
    total_steps: int
    vllm: Any  # the colocated vLLM engine, or None
    optimizer: Any
    scheduler: Any
    balance: EmaBalance | FixedBalance
    two_phase: bool  # EMA lambda in raft mode: g_SFT is kept apart until lambda is known
    vllm_synced_step: int | None = None  # the step whose weights the engine holds
    teacher_engine: Any = None  # teacher.engine vllm: the engine giving the teacher's top-K
    # first tokens of loss.reference_words (teacher_reference_top1, loss.mask_reference_kl)
    reference_ids: torch.Tensor = dataclasses.field(
        default_factory=lambda: torch.empty(0, dtype=torch.long)
    )

    @property
    def device(self) -> torch.device:
        device: torch.device = self.accelerator.device
        return device

    @property
    def use_kl(self) -> bool:
        return self.cfg.loss.mode in ("raft", "on-policy")

    @property
    def use_sft(self) -> bool:
        return self.cfg.loss.mode in ("raft", "sft")

    def kl_weights(
        self, topk_ids: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """loss.reference_weights for this run's teacher top-K ids: (positions whose top-1
        starts a reference word, the KL position weights on the device)."""
        return reference_weights(
            topk_ids[:, 0], self.reference_ids, weight.to(self.device),
            self.cfg.loss.mask_reference_kl,
        )

    def student(self, **kwargs: Any) -> torch.Tensor:
        """The student scorer's forward under the run's autocast."""
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out: torch.Tensor = self.model(**kwargs)
        return out

    def sft_inputs(self, batch: list[Example]) -> tuple[teacher.Packed, int]:
        """x followed by y^ (the SFT target), packed; and the number of target tokens."""
        packed = teacher.pack(
            [e.prompt_ids for e in batch], [e.target_ids for e in batch], self.pad_id
        )
        return packed, int(packed.targets.numel())

    def to_device(self, packed: teacher.Packed) -> dict[str, torch.Tensor]:
        return {
            "input_ids": packed.input_ids.to(self.device),
            "attention_mask": packed.attention_mask.to(self.device),
            "batch_index": packed.batch_index.to(self.device),
            "position_index": packed.position_index.to(self.device),
        }

    def reduce_sum(self, values: list[float]) -> list[float]:
        """`values` summed over processes (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return [float(v) for v in t.tolist()]

    def grad_sync(self, last: bool) -> Any:
        """Reduce gradients over processes only on the last micro-batch of a step."""
        if self.cfg.train.fsdp:
            return sharding.gradient_sync(self.model, enabled=last)
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def gather_params(self) -> Callable[[], Any] | None:
        """FSDP: gather the root weights for generation; None otherwise."""
        if not self.cfg.train.fsdp:
            return None
        return lambda: sharding.gathered(self.model)

    def peak_memory_mb(self) -> float:
        """Peak memory so far: max_memory_allocated on CUDA, peak RSS of the process on CPU."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def student_lm(self) -> Any:
        """The student's transformers LM, unwrapped from DDP and the scorer."""
        return self.accelerator.unwrap_model(self.model).lm


def build_run(cfg: FitConfig) -> FitRun:
    """All parts of a run, in the order that fixes its random draws (LoRA's initial
    adapters, then the engine) and refuses what is unsupported before the slow parts."""
    check_lora(cfg)
    accelerator = make_accelerator(cfg)
    world = accelerator.num_processes
    local_batch, micro_batch = plan_batches(cfg, world)
    _log_processes(cfg, accelerator.device, world, micro_batch)
    bf16, tf32 = choose_precision(cfg, accelerator.device)
    tokenizer, lm, teacher_model = load_models(cfg)
    eos, pad_id = eos_ids(tokenizer, lm), int(tokenizer.pad_token_id)
    log.debug("eos ids %s, pad id %d", sorted(eos), pad_id)
    data, total_steps = build_data(cfg, tokenizer)
    peft, model = build_student(cfg, lm, teacher_model, accelerator.device)
    vllm = open_vllm(cfg, accelerator)
    teacher_engine = open_teacher_engine(cfg)
    model, optimizer = build_optimizer(cfg, model, accelerator)
    scheduler = build_scheduler(cfg, optimizer, total_steps, accelerator)
    balance, two_phase = build_balance(cfg)
    return FitRun(
        cfg=cfg,
        accelerator=accelerator,
        world=world,
        rank=accelerator.process_index,
        local_batch=local_batch,
        micro_batch=micro_batch,
        bf16=bf16,
        tf32=tf32,
        tokenizer=tokenizer,
        eos_ids=eos,
        pad_id=pad_id,
        teacher_model=teacher_model,
        peft=peft,
        model=model,
        data=data,
        total_steps=total_steps,
        vllm=vllm,
        optimizer=optimizer,
        scheduler=scheduler,
        balance=balance,
        two_phase=two_phase,
        teacher_engine=teacher_engine,
        reference_ids=reference_token_ids(tokenizer, cfg.loss.reference_words).to(accelerator.device),
    )


def reference_token_ids(tokenizer: Any, words: Sequence[str]) -> torch.Tensor:
    """The token the teacher would start each word with, lower-case or capitalised, with and
    without a leading space (' reference', 'Reference', ...). A bare space piece ('▁' before
    a word in sentencepiece tokenizers) is skipped, and a first piece shorter than 4
    letters of the word ('R' of 'R|ef|erence') is left out: it starts too many other words."""
    ids: set[int] = set()
    for word in words:
        for form in {word.lower(), word.capitalize()}:
            for text in (form, " " + form):
                pieces = tokenizer.encode(text, add_special_tokens=False)
                first = next((i for i in pieces if tokenizer.decode([i]).strip()), None)
                if first is None:
                    continue
                piece = tokenizer.decode([first]).strip()
                if form.startswith(piece) and len(piece) >= min(4, len(form)):
                    ids.add(int(first))
                else:
                    log.debug("reference word %r: first piece %r left out", text, piece)
    return torch.tensor(sorted(ids), dtype=torch.long)


def check_lora(cfg: FitConfig) -> None:
    """train.lora's combinations that are not supported, refused before loading."""
    if cfg.train.lora is not None and cfg.train.fsdp:
        raise DistillError(
            "train.lora with train.fsdp is not supported (FSDP2 sharding of the peft "
            "model is untested here); use LoRA on one process or DDP, or remove train.lora"
        )


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
    """accelerate's Accelerator: the processes (gloo on CPU only with cpu=True), DDP, the
    trackers. FSDP is applied by sharding.py: accelerate's FSDP plugin does not run on CPU."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

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


def plan_batches(cfg: FitConfig, world: int) -> tuple[int, int]:
    """(rows per process, rows per micro-batch) of each step's global batch."""
    t = cfg.train
    per_step = world * t.gradient_accumulation_steps
    if t.batch_size % per_step:
        raise DistillError(
            f"train.batch_size {t.batch_size} is not divisible by processes ({world}) "
            f"x train.gradient_accumulation_steps ({t.gradient_accumulation_steps})"
        )
    return t.batch_size // world, t.batch_size // per_step


def _log_processes(cfg: FitConfig, device: torch.device, world: int, micro_batch: int) -> None:
    t = cfg.train
    kind = "FSDP" if t.fsdp else ("DDP" if world > 1 else "no data parallelism")
    log.info(
        f"{world} process(es), {kind}, device {device.type}; batch "
        f"{t.batch_size} = {world} x {t.gradient_accumulation_steps} micro-batch(es) "
        f"of {micro_batch}"
    )


def choose_precision(cfg: FitConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, TF32 matmuls): what train.bf16 and train.tf32 give on this device."""
    t = cfg.train
    bf16 = t.bf16 and autocast_supported(device)
    if t.bf16 and not bf16:
        log.warning("train.bf16 is on but %s has no bf16 autocast: training in float32", device)
    else:
        log.info("precision: %s", "bf16 autocast" if bf16 else "float32 (train.bf16 off)")
    tf32 = apply_tf32(t.tf32, device)
    if device.type == "cuda":
        how = "TF32" if tf32 else "full float32 (train.tf32)"
        log.info("float32 matmuls (the loss's lm_head chunks): %s", how)
    return bf16, tf32


def resolve_model_path(name: str) -> Path:
    """A registry name or a folder, as the folder transformers loads."""
    from schemas.model_registry import resolve_model

    return Path(resolve_model(name).path)


def load_models(cfg: FitConfig) -> tuple[Any, Any, Any]:
    """Tokenizer, student LM and (unless sft mode) the frozen teacher.

    Checks the shared vocabulary, and that each model's logits are what `head.py` computes
    (its bias and logit post-processing), refusing a model whose head does more.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student_path = resolve_model_path(cfg.model.student)
    where = "" if str(student_path) == cfg.model.student else f" ({student_path})"
    log.info(f"student: {cfg.model.student}{where}")
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        log.info("the tokenizer has no pad token: padding with eos %r", tokenizer.eos_token)
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    check_head(student, cfg.model.student)
    if cfg.loss.mode == "sft":
        log.info("loss.mode sft: no teacher loaded, no rollouts")
        return tokenizer, student, None
    teacher_path = resolve_model_path(cfg.teacher_name)
    if cfg.train.lora is not None and teacher_path == student_path:
        log.info("teacher: the student's base weights with the LoRA adapters disabled (one copy)")
        return tokenizer, student, None
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
    if cfg.teacher.engine == "vllm":
        log.info("teacher.engine vllm: the teacher's weights stay out of this process")
        return tokenizer, student, None
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


def eos_ids(tokenizer: Any, lm: Any) -> set[int]:
    """Token ids that end a trajectory: the tokenizer's eos and the generation config's."""
    eos = {int(tokenizer.eos_token_id)}
    gen_eos = getattr(lm.generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif isinstance(gen_eos, list):
        eos.update(int(e) for e in gen_eos)
    return eos


def build_data(cfg: FitConfig, tokenizer: Any) -> tuple[Dataset, int]:
    """Rows -> tokenized train/eval examples; and the number of optimizer steps."""
    rows, _ = load_rows(cfg.data.path, cfg.data.revision)
    data = build_dataset(rows, tokenizer, cfg.data, cfg.loss, cfg.teacher, source=cfg.data.path)
    skipped = dict(data.skipped)
    if not data.train:
        raise DistillError(
            f"{cfg.data.path}: no training rows left after filtering "
            f"(skipped: {skipped}, eval: {len(data.eval)})"
        )
    log.info(
        f"data {cfg.data.path}: {data.source_rows} rows -> {len(data.train)} train, "
        f"{len(data.eval)} eval, {sum(skipped.values())} skipped {skipped or ''}"
    )
    if not getattr(tokenizer, "chat_template", None):
        log.warning(
            "the student's tokenizer has no chat template: prompts are plain text "
            f"{FALLBACK_PROMPT!r}, and so is the teacher context (teacher.format plain)"
        )
    if cfg.loss.mode == "on-policy":
        log.info("teacher context: the student's own prompt (loss.mode on-policy)")
    else:
        log.info(f"teacher context: y^ and x, teacher.format {cfg.teacher.format}")
    total_steps = cfg.train.max_steps or math.ceil(
        cfg.train.epochs * len(data.train) / cfg.train.batch_size
    )
    how = "train.max_steps" if cfg.train.max_steps else f"{cfg.train.epochs} epochs"
    log.info("%d optimizer steps (%s)", total_steps, how)
    return data, total_steps


def build_student(
    cfg: FitConfig, lm: Any, teacher_model: Any, device: torch.device
) -> tuple[Any, StudentScorer]:
    """(the PeftModel with train.lora, else None; the student scorer on its device, sharded
    under FSDP); the teacher moves beside it."""
    if cfg.train.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        log.info("gradient checkpointing on")
    lm.config.use_cache = False
    if teacher_model is not None:
        teacher_model.to(device)
    peft: Any = None  # lm holds its adapters
    if cfg.train.lora is not None:
        peft = lora.add_adapters(lm, cfg.train.lora, cfg.train.seed)
        trained = sum(p.numel() for p in lm.parameters() if p.requires_grad)
        total = sum(p.numel() for p in lm.parameters())
        log.info(
            f"LoRA r {cfg.train.lora.r}, alpha {cfg.train.lora.alpha}, dropout "
            f"{cfg.train.lora.dropout}, target_modules {cfg.train.lora.target_modules!r}: "
            f"{trained:,} of {total:,} parameters train"
        )
    model = StudentScorer(lm, chunk=cfg.loss.logit_chunk_size)
    if cfg.train.fsdp:
        sharding.shard_student(model, device)
    return peft, model


def open_vllm(cfg: FitConfig, accelerator: Any) -> Any:
    """The vLLM rollout engine when `rollout.engine: vllm` and there are rollouts: a served
    student at `rollout.url` (checked now), else an engine colocated in this process."""
    if cfg.loss.mode not in ("raft", "on-policy"):
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
    if r.url is not None:
        from raft_distill.rollout_served import ServedRollout

        sync_dir = Path(r.sync_dir) if r.sync_dir else Path(cfg.train.output_dir) / "rollout_sync"
        log.info(f"rollouts: a served student at {r.url}; weights pushed through {sync_dir}")
        return ServedRollout(r.url, r, sync_dir, rank=accelerator.process_index)
    from raft_distill.rollout_vllm import VLLMRollout

    return VLLMRollout(
        resolve_model_path(cfg.model.student),
        cfg.rollout,
        seed=cfg.train.seed,
        rank=accelerator.process_index,
        local_rank=accelerator.local_process_index,
        world=accelerator.num_processes,
    )


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


def build_optimizer(cfg: FitConfig, model: Any, accelerator: Any) -> tuple[Any, Any]:
    """AdamW (weight decay on matrices only) over the trained parameters (LoRA: the
    adapters); (model, optimizer) prepared by accelerate, except under FSDP."""
    t = cfg.train
    trained = [p for p in model.parameters() if p.requires_grad]
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
    if t.fsdp:  # not handed to accelerate: sharding.py saves and restores the sharded state
        return model, optimizer
    prepared_model, prepared_optimizer = accelerator.prepare(model, optimizer)
    return prepared_model, prepared_optimizer


def build_scheduler(cfg: FitConfig, optimizer: Any, total_steps: int, accelerator: Any) -> Any:
    """The learning-rate schedule (transformers' `get_scheduler`), saved with checkpoints."""
    from transformers import get_scheduler

    t = cfg.train
    try:
        scheduler = get_scheduler(
            t.lr_scheduler,
            optimizer,
            num_warmup_steps=t.warmup_steps,
            num_training_steps=total_steps,
        )
    except ValueError as err:
        raise DistillError(f"train.lr_scheduler: {err}") from None
    accelerator.register_for_checkpointing(scheduler)
    log.debug("AdamW lr %g, %s schedule, %d warmup steps", t.lr, t.lr_scheduler, t.warmup_steps)
    return scheduler


def build_balance(cfg: FitConfig) -> tuple[EmaBalance | FixedBalance, bool]:
    """lambda: the EMA balance (two gradient phases) or a fixed value (one phase)."""
    loss = cfg.loss
    balance: EmaBalance | FixedBalance
    if loss.lambda_ == "ema":
        balance = EmaBalance(beta=loss.ema_beta, eps=loss.eps)
    else:
        balance = FixedBalance(float(loss.lambda_))
    # lambda is known only after both full-step losses: keep g_SFT apart meanwhile
    two_phase = loss.mode == "raft" and isinstance(balance, EmaBalance)
    if loss.mode == "raft":
        log.info(
            "lambda: %s",
            f"EMA, beta {loss.ema_beta}" if two_phase else f"fixed {loss.lambda_}",
        )
    return balance, two_phase


def open_teacher_engine(cfg: FitConfig) -> Any:
    """With `teacher.engine: vllm` and a KL term: a served teacher at `teacher.url` (checked
    now: a server that is down fails before training), else a vLLM engine in this process.
    Its max-logprobs is loss.top_k: it returns the same top-K the in-process teacher keeps."""
    if cfg.teacher.engine != "vllm" or cfg.loss.mode not in ("raft", "on-policy"):
        return None
    from raft_distill.teacher_vllm import InprocessEngine, ServedEngine

    if cfg.teacher.url is not None:
        log.info("teacher: served by vLLM at %s (top-%d prompt log-probs)", cfg.teacher.url, cfg.loss.top_k)
        return ServedEngine(cfg.teacher.url, cfg.loss.top_k, retries=cfg.teacher.request_retries)
    path = str(resolve_model_path(cfg.teacher_name))
    log.info("teacher: a vLLM engine in this process on %s (top-%d prompt log-probs)", path, cfg.loss.top_k)
    longest = cfg.teacher.max_context_tokens + cfg.rollout.max_new_tokens
    return InprocessEngine(path, cfg.loss.top_k, max_model_len=longest, dtype="auto")

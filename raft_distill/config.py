"""The `raft-distill fit` config: every knob of METHOD.md stage 2, with documented defaults.

Defaults follow the paper where it gives a value (AdamW, lr 5e-6, weight decay 0.01,
top_k 512, temperature 1.5, EMA beta 0.9, bf16); where it is silent the default is this
project's choice and says so. Unknown keys are errors that name the key and the allowed
ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from raft_distill.errors import DistillError
from schemas import config_files
from schemas.teacher_context import TEACHER_TEMPLATE, TeacherFormat

_ALL_DECISIONS: tuple[Literal["accepted", "fallback"], ...] = ("accepted", "fallback")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where the fused dataset D^ is and which of its rows train."""

    path: str = Field(
        description="dataset folder from `raft-data build` (data/*.parquet), or a Hub dataset id org/name"
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) for a Hub id")
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="held out by id hash")
    seed: int = Field(default=0, description="salt of the id hash that makes the train/eval split")
    use_decisions: list[Literal["accepted", "fallback"]] = Field(
        default_factory=lambda: list(_ALL_DECISIONS),
        description="stage-1 decisions to train on (both: nothing dropped, as in the paper)",
    )
    on_over_length: Literal["skip", "fail"] = Field(
        default="skip",
        description="rows too long for the teacher/student context (stage-1 flag or our "
        "own token count): skip and count them, or stop with an error. Never truncated.",
    )
    max_prompt_tokens: int = Field(default=1024, gt=0, description="student prompt (chat template)")
    max_target_tokens: int = Field(default=1024, gt=0, description="SFT target y^ tokens (+ eos)")


class ModelConfig(_Strict):
    """Student S (trained) and teacher T (frozen original); names go through schemas."""

    student: str = Field(
        default="smollm2-135m-instruct", description="the model trained: embedded name, HF folder or Hub id"
    )
    teacher: str | None = Field(
        default=None, description="default: the student's name (frozen copy)"
    )


class RolloutConfig(_Strict):
    """Student sampling of z ~ S(. | x); the paper does not specify the settings."""

    max_new_tokens: int = Field(default=128, gt=0, description="length of each rollout z, tokens")
    target_length_factor: float | None = Field(
        default=None,
        gt=0.0,
        description="opt-in trajectory budget tied to the row (a method choice the paper does "
        "not specify; docs/METHOD.md): z is cut at ceil(factor x the row's SFT target tokens, "
        "y^ + eos), never beyond max_new_tokens; null = max_new_tokens for every row",
    )
    temperature: float = Field(default=1.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="nucleus sampling mass; 1 = off")
    top_k: int = Field(
        default=0, ge=0, description="0 = off (transformers otherwise defaults to 50)"
    )
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="transformers: HF generate on the student; vllm: a colocated vLLM engine "
        "that gets the student's weights before each rollout",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.3, gt=0.0, lt=1.0, description="vLLM's share of GPU memory (GPU only)"
    )
    vllm_max_model_len: int = Field(
        default=2048, gt=0, description="vLLM context: prompt + max_new_tokens must fit"
    )
    url: str | None = Field(
        default=None,
        description="with engine vllm: a served student's base URL (rollout_served.py: `vllm "
        "serve` with raft_distill's worker extension), e.g. http://10.0.0.3:8000; unset: a "
        "vLLM engine in this process",
    )
    sync_dir: str | None = Field(
        default=None,
        description="with url: a folder the trainer and the server both see, where the "
        "student's weights are written for the server to reload after each optimizer step; "
        "null = <train.output_dir>/rollout_sync (a server on the same machine)",
    )

    @model_validator(mode="after")
    def _url_needs_vllm(self) -> RolloutConfig:
        if self.url is not None and self.engine != "vllm":
            raise ValueError("rollout.url is read only with rollout.engine: vllm; set both")
        if self.sync_dir is not None and self.url is None:
            raise ValueError("rollout.sync_dir is read only with rollout.url (a served student)")
        return self


class TeacherConfig(_Strict):
    """How the teacher sees z: with y^ as privileged context (raft) or x alone (on-policy).

    The context ids come from `schemas.teacher_context_ids` (stage 1 measures the same
    ones); in on-policy mode the teacher reads the student's own prompt instead.
    """

    template: str = Field(
        default=TEACHER_TEMPLATE,
        description="paper's template; must contain {reference} and {question}; z follows "
        "(trailing whitespace is stripped: no orphan whitespace token before z)",
    )
    format: TeacherFormat = Field(
        default="chat",
        description="chat: the template text as the user turn of the chat template, then the "
        "assistant header, as the student samples z (paper silent; SDFT/OPSD/TRL do this); "
        "plain: the text as is (the paper's layout; with a chat student z starts a line, so "
        "the first position stays an outlier: docs/teacher_boundary.json)",
    )
    max_context_tokens: int = Field(
        default=2048, gt=0, description="teacher context (template with y^ and x) token limit"
    )
    engine: Literal["inprocess", "vllm"] = Field(
        default="inprocess",
        description="inprocess: the frozen model in every training process; vllm: its top-K from "
        "a vLLM engine's prompt log-probs (teacher_vllm.py), so its weights leave training memory",
    )
    url: str | None = Field(
        default=None,
        description="with engine vllm: a `vllm serve <original model> --max-logprobs <top_k>` "
        "server's base URL, e.g. http://10.0.0.2:8000; unset: a vLLM engine in this process",
    )
    request_retries: int = Field(
        default=3, ge=0, description="a failed teacher request is retried this often, then the fit stops"
    )

    @field_validator("template")
    @classmethod
    def _has_fields(cls, value: str) -> str:
        for name in ("{reference}", "{question}"):
            if name not in value:
                raise ValueError(f"teacher template must contain {name}")
        return value

    @model_validator(mode="after")
    def _url_needs_vllm(self) -> TeacherConfig:
        if self.url is not None and self.engine != "vllm":
            raise ValueError("teacher.url is read only with teacher.engine: vllm; set both")
        return self

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if isinstance(value, dict) and "prompt_format" in value:
            raise ValueError("'prompt_format' was renamed 'format' (chat | plain; default chat)")
        return value


class LossConfig(_Strict):
    """Top-K temperature forward KL + SFT, balanced by a bias-corrected EMA (METHOD.md 3-5)."""

    mode: Literal["raft", "sft", "on-policy"] = Field(
        default="raft",
        description="raft: SFT + lambda*KL; sft: CE only; on-policy: KL only, plain teacher",
    )
    sft_target: Literal["fused", "gold"] = Field(
        default="fused", description="CE on y^ or on raw y"
    )
    lambda_: Literal["ema"] | float = Field(
        default="ema",
        alias="lambda",
        description="'ema' (adaptive) or a fixed float weight of L_KL",
    )
    ema_beta: float = Field(
        default=0.9, gt=0.0, lt=1.0, description="EMA decay of the two loss averages (paper: beta 0.9)"
    )
    eps: float = Field(default=1e-8, gt=0.0, description="paper silent; this project: 1e-8")
    top_k: int = Field(default=512, gt=0, description="teacher's top-K ids the KL is taken over (paper: K 512)")
    temperature: float = Field(default=1.5, gt=0.0, description="KL softmax temperature (paper: T 1.5)")
    logit_chunk_size: int = Field(
        default=64, gt=0, description="positions per lm_head chunk (memory of full-vocab logits)"
    )
    reference_words: list[str] = Field(
        default_factory=lambda: ["reference"],
        description="words of the teacher's context ('Background reference knowledge'): a z "
        "position whose teacher top-1 is one's first token (lower-case or capitalised, with "
        "or without a leading space) is counted in metrics.jsonl's teacher_reference_top1",
    )
    mask_reference_kl: bool = Field(
        default=False,
        description="drop those positions from the KL, so the student is not pulled toward "
        "talking about the reference it never sees (the leak ablation; paper: none)",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _mask_needs_words(self) -> LossConfig:
        if self.mask_reference_kl and not self.reference_words:
            raise ValueError(
                "loss.mask_reference_kl masks the positions of loss.reference_words, which is "
                "empty: give it words (default ['reference']) or set the mask to false"
            )
        return self


class LoraConfig(_Strict):
    """LoRA adapters (the `peft` library) instead of full fine-tuning; the paper is silent.

    Only the adapters train; the frozen teacher is the same base weights with the adapters
    disabled (one copy in memory) unless model.teacher names another model.
    """

    r: int = Field(default=16, gt=0, description="adapter rank")
    alpha: int = Field(default=32, gt=0, description="scale alpha / r of the update B A")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    target_modules: list[str] | str = Field(
        default="all-linear",
        description="modules that get adapters: peft's 'all-linear' (every linear layer but "
        "lm_head), a list of module names, or a regex; never the embeddings or lm_head",
    )
    merge_on_save: bool = Field(
        default=True,
        description="final/ (and each checkpoint's model/) holds the merged full model that "
        "transformers and vLLM load, adapters in adapter/; false: adapter/ only",
    )


class TrainConfig(_Strict):
    """Optimiser and loop; paper: AdamW lr 5e-6 wd 0.01, batch 16, 3 epochs, bf16."""

    lr: float = Field(default=5e-6, gt=0.0, description="AdamW peak learning rate (paper: 5e-6)")
    weight_decay: float = Field(
        default=0.01, ge=0.0, description="on weight matrices only (dim >= 2)"
    )
    adam_betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW (beta1, beta2)")
    adam_eps: float = Field(default=1e-8, gt=0.0, description="AdamW epsilon")
    max_grad_norm: float | None = Field(default=1.0, description="clip; null = off (paper silent)")
    batch_size: int = Field(
        default=16, gt=0, description="sequences per optimizer step, all processes"
    )
    gradient_accumulation_steps: int = Field(
        default=1, gt=0, description="micro-batches per process"
    )
    epochs: float = Field(default=3.0, gt=0.0, description="passes over the train rows (paper: 3)")
    max_steps: int | None = Field(default=None, gt=0, description="overrides epochs when set")
    lr_scheduler: str = Field(default="linear", description="a transformers get_scheduler name")
    warmup_steps: int = Field(default=0, ge=0, description="optimizer steps of linear warm-up")
    bf16: bool = Field(default=True, description="bf16 autocast where the device supports it")
    tf32: bool | None = Field(
        default=None,
        description="CUDA: float32 matmuls (the loss's lm_head chunks) as TF32 on tensor cores; "
        "null = torch's default (off); as transformers' TrainingArguments.tf32",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="recompute activations in backward: less memory, more compute"
    )
    student_pass: Literal["auto", "joint", "separate"] = Field(
        default="auto",
        description="raft mode: joint = one student forward/backward over [x, y^, z] packed "
        "(x read once; raft_distill/joint.py) wherever it applies (lambda fixed, or the EMA "
        "with one micro-batch per process; no sliding window narrower than a packed row); "
        "separate = an SFT pass, then a KL pass; auto = joint on CPU (its speed on GPUs, "
        "where a custom mask rules out flash attention, is not measured), separate elsewhere",
    )
    fsdp: bool = Field(
        default=False,
        description="shard the student with FSDP2 (torch fully_shard) over the processes "
        "of a torchrun / accelerate launch run; GPUs or CPUs",
    )
    lora: LoraConfig | None = Field(
        default=None,
        description="LoRA adapters instead of full fine-tuning (`pip install peft`, the lora "
        "extra); null = full fine-tuning",
    )
    checkpoint_every: int = Field(default=0, ge=0, description="steps; 0 = final checkpoint only")
    checkpoint_limit: int | None = Field(
        default=None,
        gt=0,
        description="keep only the newest N checkpoints, deleting older ones once a new one is "
        "complete (as transformers' save_total_limit); null = keep all",
    )
    eval_every: int = Field(default=0, ge=0, description="steps; 0 = evaluate at the end only")
    output_dir: str = Field(
        default="runs/distill", description="run folder: checkpoints/, final/, metrics.jsonl, summary.json"
    )
    seed: int = Field(default=0, description="seeds the row order and the rollout sampling")
    progress: bool = Field(default=True, description="show a progress bar (main process)")
    report_to: list[Literal["tensorboard", "wandb"]] | None = Field(
        default=None,
        description="experiment trackers beside metrics.jsonl, through accelerate: "
        "[tensorboard] (events in <output_dir>/tensorboard), [wandb], both, or [] for none; "
        "null = [tensorboard] when the tensorboard package is installed, else none",
    )


class FitConfig(_Strict):
    """The whole `raft-distill fit` config (one YAML file)."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    rollout: RolloutConfig = Field(default_factory=lambda: RolloutConfig())
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig())
    loss: LossConfig = Field(default_factory=lambda: LossConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())

    @property
    def teacher_name(self) -> str:
        return self.model.teacher or self.model.student


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (values parsed as YAML) to a raw config."""
    return config_files.apply_overrides(raw, overrides, DistillError)


def load_config(path: str | Path, overrides: list[str] | None = None) -> FitConfig:
    """Read a YAML config file, apply overrides, validate; errors name the key."""
    raw = apply_overrides(config_files.read_config_mapping(path, DistillError), overrides or [])
    return config_from_dict(raw, str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> FitConfig:
    """Validate a raw fit config; errors name the key and what is allowed there."""
    return config_files.validate_config(FitConfig, raw, source, DistillError, "raft-distill config")

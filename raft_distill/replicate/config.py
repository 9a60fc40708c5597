"""The `raft-distill replicate` config: one fit config + one eval config, arms, seeds.

Each arm is the shared fit config with one switch of `loss` (METHOD.md "Modes the trainer
should offer"), so the arms differ in nothing but the objective; `train.seed` and
`train.output_dir` are set per arm x seed. Unknown keys, unknown arms and overrides that
would fight an arm's own switch are errors that name the key.

Three kinds of arm: `base` (the untrained model); fit arms (one `raft-distill fit` each;
`arm_data` may give one its own data set, e.g. `sdft` trains on the SDFT data of
pipelines/sdft_demo.yaml); and post-hoc arms (POSTHOC_ARMS), which train nothing but
transform another arm's final model at that arm's seeds: `fapm` (FAPM, arXiv 2509.08255:
`prune.source`'s task vector pruned), `sft_merge` / `raft_merge` (WiSE-FT, arXiv
2109.01903: sft_raw / raft_ema merged back with the base at an alpha chosen on
validation data, `merge`).

The baselines practitioners use instead of RAFT are fit arms too: `sft_lr5e-5` and
`sft_lr2e-4` (sft_raw at a lower learning rate: the arm's train.lr wins over the shared
one), `lora_sft` / `lora_raft` (sft_raw / raft_ema with LoRA adapters, the `lora`
section), and `raft_ema_guard` (raft_ema with schemas.teacher_context's
GUARDED_TEACHER_TEMPLATE, the teacher told not to mention the reference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from raft_distill.config import LoraConfig
from raft_distill.errors import DistillError
from raft_distill.merge import GRID
from raft_distill.prune import DEFAULT_RATIO, Targets
from schemas import config_files
from schemas.teacher_context import GUARDED_TEACHER_TEMPLATE

ArmName = Literal[
    "base", "sft_raw", "sft_lr5e-5", "sft_lr2e-4", "sft_fused", "sdft", "fapm", "sft_merge",
    "on_policy", "raft_ema", "raft_ema_guard", "raft_merge", "raft_fixed_0.1",
    "raft_fixed_1.0", "raft_ema_plain", "lora_sft", "lora_raft", "raft_ema_vllm",
    "raft_ema_budget", "raft_ema_mask",
]

_SFT_GOLD: dict[str, Any] = {"loss.mode": "sft", "loss.sft_target": "gold"}
_RAFT_EMA: dict[str, Any] = {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": "ema"}
# The fit switches of each arm (paper Table 1 + ablations + practitioners' baselines).
# `base` trains nothing; the post-hoc arms (POSTHOC_ARMS) transform another arm's model.
# The LoRA arms also get train.lora = the replicate config's `lora` section (LORA_ARMS).
ARMS: dict[str, dict[str, Any] | None] = {
    "base": None,
    "sft_raw": _SFT_GOLD,
    "sft_lr5e-5": {**_SFT_GOLD, "train.lr": 5e-5},
    "sft_lr2e-4": {**_SFT_GOLD, "train.lr": 2e-4},
    "sft_fused": {"loss.mode": "sft", "loss.sft_target": "fused"},
    # SDFT (Yang et al. 2024): plain SFT on the model's own checked rewrites (arm_data.sdft)
    "sdft": {"loss.mode": "sft", "loss.sft_target": "fused"},
    "fapm": None,
    "sft_merge": None,
    "on_policy": {"loss.mode": "on-policy"},
    "raft_ema": _RAFT_EMA,
    # teacher-guard ablation: the teacher is told not to mention or copy the reference
    "raft_ema_guard": {**_RAFT_EMA, "teacher.template": GUARDED_TEACHER_TEMPLATE},
    "raft_merge": None,
    "raft_fixed_0.1": {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": 0.1},
    "raft_fixed_1.0": {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": 1.0},
    # teacher-format ablation: raft_ema with the paper's plain layout instead of the chat one
    "raft_ema_plain": {**_RAFT_EMA, "teacher.format": "plain"},
    "lora_sft": _SFT_GOLD,
    "lora_raft": _RAFT_EMA,
    # engine-equivalence check (issue 22): raft_ema with its rollouts sampled by a colocated
    # vLLM engine instead of HF generate; other random numbers, the same distribution
    "raft_ema_vllm": {**_RAFT_EMA, "rollout.engine": "vllm"},
    # trajectory-budget ablation (issue 22, docs/METHOD.md step 1): z cut at 1.5 x the row's
    # SFT target instead of max_new_tokens for every row
    "raft_ema_budget": {**_RAFT_EMA, "rollout.target_length_factor": 1.5},
    # leak ablation (issue 21): no KL at z positions where the teacher's top-1 starts
    # 'reference' (loss.mask_reference_kl)
    "raft_ema_mask": {**_RAFT_EMA, "loss.mask_reference_kl": True},
}
ARM_ORDER: list[ArmName] = [
    "base", "sft_raw", "sft_lr5e-5", "sft_lr2e-4", "sft_fused", "sdft", "fapm", "sft_merge",
    "on_policy", "raft_ema", "raft_ema_guard", "raft_merge", "raft_fixed_0.1",
    "raft_fixed_1.0", "raft_ema_plain", "lora_sft", "lora_raft", "raft_ema_vllm",
    "raft_ema_budget", "raft_ema_mask",
]
assert ARM_ORDER == list(ARMS)
# post-hoc arm -> (what it does, its fixed source arm; fapm's is prune.source)
POSTHOC_ARMS: dict[str, tuple[Literal["prune", "merge"], str | None]] = {
    "fapm": ("prune", None),
    "sft_merge": ("merge", "sft_raw"),
    "raft_merge": ("merge", "raft_ema"),
}
LORA_ARMS = ("lora_sft", "lora_raft")
# raft_ema's one-switch ablations: arm -> (dotted fit key, the arm's value)
RAFT_EMA_ABLATIONS: dict[str, tuple[str, Any]] = {
    arm: next((k, v) for k, v in sw.items() if k not in _RAFT_EMA)
    for arm, sw in ARMS.items()
    if arm.startswith("raft_ema_") and sw is not None and len(sw) == len(_RAFT_EMA) + 1
}
# a new raft_ema_* arm must be one switch on raft_ema's, with a two-level key
assert set(RAFT_EMA_ABLATIONS) == {a for a in ARMS if a.startswith("raft_ema_")}
assert all(k.count(".") == 1 for k, _ in RAFT_EMA_ABLATIONS.values())
LR_ARMS = {arm: float(sw["train.lr"]) for arm, sw in ARMS.items() if sw and "train.lr" in sw}
DEFAULT_ALL_SEEDS: list[ArmName] = ["sft_raw", "raft_ema"]  # the headline arms
# The default arm list (the demo's); sdft needs arm_data.sdft, so it is opt-in like the others.
DEFAULT_ARMS: list[ArmName] = [
    "base", "sft_raw", "sft_fused", "on_policy", "raft_ema", "raft_fixed_0.1", "raft_fixed_1.0"
]
# Keys the orchestrator owns: set per arm (loss, LoRA) or per run (seed, output folder).
RESERVED_FIT_KEYS = (
    "loss.mode", "loss.sft_target", "loss.lambda", "train.seed", "train.output_dir", "train.lora"
)
RESERVED_EVAL_KEYS = ("models", "output_dir")


def lr_clash(arms: Sequence[str], lr: Any, where: str) -> str | None:
    """The error when an lr arm would train at the shared train.lr (a copy of sft_raw)."""
    for arm in arms:
        if arm in LR_ARMS and lr is not None and float(lr) == LR_ARMS[arm]:
            return (
                f"arm {arm} trains at train.lr {LR_ARMS[arm]:g}, which {where} sets for every "
                "arm: it would repeat sft_raw; drop the arm or change the shared train.lr"
            )
    return None


IFEvalMetric = Literal[
    "prompt_level_strict", "instruction_level_strict", "prompt_level_loose", "instruction_level_loose"
]


class PruneConfig(BaseModel):
    """The `fapm` arm: FAPM on another arm's final model (raft_distill.prune)."""

    model_config = ConfigDict(extra="forbid")

    source: ArmName = Field(
        default="sft_raw", description="the fit arm whose final model is pruned (paper: SFT)"
    )
    ratio: float = Field(
        default=DEFAULT_RATIO, ge=0.0, le=1.0,
        description="fraction of each matrix's task-vector entries zeroed (the paper's 90%)",
    )
    targets: Targets = Field(
        default="linear",
        description="linear: the decoder layers' projection weights; all: every float tensor",
    )

    @field_validator("source")
    @classmethod
    def _fit_arm(cls, value: str) -> str:
        if ARMS[value] is None:
            raise ValueError(f"'{value}' trains nothing; choose a fit arm, e.g. sft_raw")
        return value


class MergeConfig(BaseModel):
    """The merge arms (sft_merge, raft_merge): WiSE-FT with alpha chosen on validation data
    (raft_distill.merge.choose_alpha): domain answer NLL + general MC accuracy."""

    model_config = ConfigDict(extra="forbid")

    grid: list[float] = Field(
        default_factory=lambda: list(GRID), min_length=1,
        description="alphas tried (0 = the base, 1 = the fine-tuned model)",
    )
    val_path: str | None = Field(
        default=None,
        description="domain validation JSONL (question, answer rows; never trained on or "
        "reported), e.g. data/medmcqa/val.jsonl; needed by the merge arms",
    )
    mc_items: int = Field(
        default=50, gt=0,
        description="validation items per general MC task, chosen apart from the report's "
        "general_mc items (the eval config's tasks; its default six when it has none)",
    )
    mc_seed: int = Field(default=1, description="the validation items' selection seed")
    dtype: Literal["float32", "bfloat16"] = Field(
        default="bfloat16", description="scoring dtype (the merged model keeps the source's)"
    )
    token_budget: int = Field(default=4096, gt=0, description="padded tokens per forward")

    @field_validator("grid")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 1.0 for a in value) or len(set(value)) != len(value):
            raise ValueError("distinct alphas in [0, 1], e.g. [0, 0.3, 0.5, 0.7, 0.9, 1]")
        return sorted(value)


class ReplicateConfig(BaseModel):
    """The whole `raft-distill replicate` config (one YAML file)."""

    model_config = ConfigDict(extra="forbid")

    fit_config: str = Field(description="`raft-distill fit` YAML shared by every arm")
    fit_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted key -> value applied to the fit config for every arm, "
        "e.g. {train.max_steps: 30}; the loss switches, seed and output_dir are the arms' own",
    )
    eval_config: str = Field(description="`raft-distill eval` YAML (its models list is replaced)")
    eval_overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted key -> value, e.g. {suites.domain.limit: 40}"
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    arms: list[ArmName] = Field(default_factory=lambda: list(DEFAULT_ARMS), min_length=1)
    all_seeds_arms: list[ArmName] = Field(
        default_factory=lambda: list(DEFAULT_ALL_SEEDS),
        description="arms trained at every seed; the others at the first seed only "
        "(a post-hoc arm follows its source's seeds: fapm prune.source's, sft_merge "
        "sft_raw's, raft_merge raft_ema's)",
    )
    arm_data: dict[ArmName, str] = Field(
        default_factory=dict,
        description="arm -> data.path of its own data set (a fit arm of `arms`), e.g. "
        "{sdft: runs/sdft_demo}; the other arms train on the fit config's data.path",
    )
    prune: PruneConfig = Field(
        default_factory=lambda: PruneConfig(), description="the fapm arm's settings"
    )
    merge: MergeConfig = Field(
        default_factory=lambda: MergeConfig(), description="the sft_merge / raft_merge arms' settings"
    )
    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(),
        description="train.lora of the lora_sft / lora_raft arms (their lr: the shared train.lr)",
    )
    ifeval_metric: IFEvalMetric = Field(
        default="prompt_level_strict", description="the IFEval column of the report"
    )
    recovered_metric: Literal["general", "general_mc", "ifeval"] = Field(
        default="general",
        description="the retention column whose loss vs Base the report's recovered fraction "
        "(method - SFT) / (Base - SFT) measures",
    )
    keep_checkpoints: bool = Field(
        default=False,
        description="keep each finished run's checkpoints/ (~2 GB each for 135M); final/ is kept",
    )
    output_dir: str = "runs/replicate"
    prior_runs: str | None = Field(
        default=None,
        description="a folder written by `raft-distill replicate --export DIR` (an earlier run "
        "without weights): models it holds with the same eval fingerprint are neither trained "
        "nor evaluated again, and the report includes them (replicate/carry.py)",
    )

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be unique")
        return value

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, value: list[ArmName]) -> list[ArmName]:
        if len(set(value)) != len(value):
            raise ValueError("arms must be unique")
        return sorted(value, key=ARM_ORDER.index)

    @field_validator("fit_overrides", "eval_overrides", mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        return flatten(value) if isinstance(value, dict) else value

    @field_validator("fit_overrides")
    @classmethod
    def _fit_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in RESERVED_FIT_KEYS or key.startswith("train.lora."):
                hint = " (the lora arms' settings: the `lora` section)" if "lora" in key else ""
                raise ValueError(
                    f"'{key}' is set by each arm / run{hint}; allowed: any fit key but "
                    f"{', '.join(RESERVED_FIT_KEYS)}"
                )
        return value

    @field_validator("eval_overrides")
    @classmethod
    def _eval_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key.split(".")[0] in RESERVED_EVAL_KEYS:
                raise ValueError(f"'{key}' is set by replicate (models = the arms, output_dir)")
        return value

    @model_validator(mode="after")
    def _arms_consistent(self) -> ReplicateConfig:
        for arm in self.arm_data:
            if ARMS[arm] is None:
                raise ValueError(f"arm_data.{arm}: '{arm}' trains nothing; only fit arms take data")
            if arm not in self.arms:
                raise ValueError(f"arm_data.{arm}: '{arm}' is not in arms ({', '.join(self.arms)})")
        if "sdft" in self.arms and "sdft" not in self.arm_data:
            raise ValueError(
                "arm 'sdft' trains on the SDFT data set: set arm_data.sdft to its folder "
                "(raft-data build pipelines/sdft_demo.yaml -> runs/sdft_demo)"
            )
        for arm in self.arms:
            if arm in POSTHOC_ARMS:
                self._posthoc_consistent(arm)
        clash = lr_clash(self.arms, self.fit_overrides.get("train.lr"), "fit_overrides")
        if clash:
            raise ValueError(clash)
        if not self.lora.merge_on_save:
            raise ValueError(
                "lora.merge_on_save: false leaves final/ without a full model, which the eval "
                "(and a merge) loads; keep it true"
            )
        return self

    def _posthoc_consistent(self, arm: str) -> None:
        source = self.source(arm)
        kind, _ = POSTHOC_ARMS[arm]
        key = "prune.source " if arm == "fapm" else ""
        if source not in self.arms:
            raise ValueError(f"arm '{arm}' {kind}s {key}'{source}': add it to arms")
        if arm in self.all_seeds_arms and source not in self.all_seeds_arms:
            raise ValueError(
                f"all_seeds_arms: {arm} follows the seeds of {key}'{source}'; add that arm instead"
            )
        if kind == "merge" and self.merge.val_path is None:
            raise ValueError(
                f"arm '{arm}' chooses its alpha on domain validation data: set merge.val_path "
                "(a question/answer JSONL never trained on, e.g. data/medmcqa/val.jsonl)"
            )

    def source(self, arm: str) -> str:
        """The fit arm whose final model a post-hoc arm transforms."""
        _, source = POSTHOC_ARMS[arm]
        return self.prune.source if source is None else source

    def arm_seeds(self, arm: str) -> list[int]:
        """The seeds an arm runs at: every seed for all_seeds_arms, else the first; a
        post-hoc arm follows its source."""
        if arm in POSTHOC_ARMS:
            arm = self.source(arm)
        return self.seeds if arm in self.all_seeds_arms else self.seeds[:1]

    def runs(self) -> list[tuple[str, int]]:
        """Every (trained arm, seed) in training order: seed by seed (all arms at the first
        seed, then the next...), and within a seed the headline arms (DEFAULT_ALL_SEEDS)
        first, then the cheap SFT arms, then the rollout arms, each in ARM_ORDER. A run cut
        short thus has whole seeds of every arm (`--set seeds=[0]` then reports them)."""

        def key(run: tuple[str, int]) -> tuple[int, bool, bool, int]:
            arm, seed = run
            switches = ARMS[arm] or {}
            return (self.seeds.index(seed), arm not in DEFAULT_ALL_SEEDS,
                    switches.get("loss.mode") != "sft", list(ARMS).index(arm))

        fits = [(a, s) for a in self.arms if ARMS[a] is not None for s in self.arm_seeds(a)]
        return sorted(fits, key=key)

    def every_seed_arms(self) -> list[str]:
        """The arms (trained or post-hoc) run at every seed, in order."""

        def lead(arm: str) -> str:
            return self.source(arm) if arm in POSTHOC_ARMS else arm

        return [a for a in self.arms if ARMS[lead(a)] and lead(a) in self.all_seeds_arms]

    def posthoc_runs(self) -> list[tuple[str, int]]:
        """Every (post-hoc arm, seed): after the fits, from the source arm's final model."""
        return [(a, s) for a in self.arms if a in POSTHOC_ARMS for s in self.arm_seeds(a)]

    def run_dir(self, arm: str, seed: int) -> Path:
        return Path(self.output_dir) / arm / f"seed{seed}"


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{a: {b: 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}; an empty mapping stays a value."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ReplicateConfig:
    """Validate a raw replicate config; errors name the key, the value and what is allowed
    (the formatter every command shares, `schemas.config_files`)."""
    return config_files.validate_config(
        ReplicateConfig, raw, source, DistillError, "raft-distill config --kind replicate"
    )


def load_replicate_config(path: str | Path, overrides: list[str] | None = None) -> ReplicateConfig:
    """Read a YAML config, apply `key=value` overrides (YAML values), validate."""
    raw = config_files.read_config_mapping(path, DistillError)
    raw = config_files.apply_overrides(raw, overrides or [], DistillError)
    return config_from_dict(raw, str(path))


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """raw[a][b][c] = value for key 'a.b.c', creating sections; errors name the key."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise DistillError(f"{source}: key '{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = json.loads(json.dumps(value))  # a deep copy of plain YAML data

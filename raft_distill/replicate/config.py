"""The `raft-distill replicate` config: one fit config + one eval config, arms, seeds.

Each arm is the shared fit config with one switch of `loss` (METHOD.md "Modes the trainer
should offer"), so the arms differ in nothing but the objective; `train.seed` and
`train.output_dir` are set per arm x seed. Unknown keys, unknown arms and overrides that
would fight an arm's own switch are errors that name the key.

Three kinds of arm: `base` (the untrained model), fit arms (one `raft-distill fit` each;
`arm_data` may give one its own data set, e.g. `sdft` trains on the SDFT data of
pipelines/sdft_demo.yaml), and the prune arm `fapm` (FAPM, arXiv 2509.08255: the task
vector of another arm's final model, `prune.source`, pruned; no training, run at that
arm's seeds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from raft_distill.errors import DistillError
from raft_distill.prune import DEFAULT_RATIO, Targets
from schemas import config_files

ArmName = Literal[
    "base", "sft_raw", "sft_fused", "sdft", "fapm", "on_policy", "raft_ema", "raft_fixed_0.1",
    "raft_fixed_1.0", "raft_ema_plain",
]

# The fit switches of each arm (paper Table 1 + ablations). `base` trains nothing; `fapm`
# trains nothing either: it prunes another arm's final model (PRUNE_ARMS).
ARMS: dict[str, dict[str, Any] | None] = {
    "base": None,
    "sft_raw": {"loss.mode": "sft", "loss.sft_target": "gold"},
    "sft_fused": {"loss.mode": "sft", "loss.sft_target": "fused"},
    # SDFT (Yang et al. 2024): plain SFT on the model's own checked rewrites (arm_data.sdft)
    "sdft": {"loss.mode": "sft", "loss.sft_target": "fused"},
    "fapm": None,
    "on_policy": {"loss.mode": "on-policy"},
    "raft_ema": {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": "ema"},
    "raft_fixed_0.1": {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": 0.1},
    "raft_fixed_1.0": {"loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": 1.0},
    # teacher-format ablation: raft_ema with the paper's plain layout instead of the chat one
    "raft_ema_plain": {
        "loss.mode": "raft", "loss.sft_target": "fused", "loss.lambda": "ema",
        "teacher.format": "plain",
    },
}
ARM_ORDER: list[ArmName] = [
    "base", "sft_raw", "sft_fused", "sdft", "fapm", "on_policy", "raft_ema", "raft_fixed_0.1",
    "raft_fixed_1.0", "raft_ema_plain",
]
assert ARM_ORDER == list(ARMS)
PRUNE_ARMS = ("fapm",)
DEFAULT_ALL_SEEDS: list[ArmName] = ["sft_raw", "raft_ema"]  # the headline arms
# The default arm list (the demo's); sdft needs arm_data.sdft, so it is opt-in like the others.
DEFAULT_ARMS: list[ArmName] = [
    "base", "sft_raw", "sft_fused", "on_policy", "raft_ema", "raft_fixed_0.1", "raft_fixed_1.0"
]
# Keys the orchestrator owns: set per arm (loss) or per run (seed, output folder).
RESERVED_FIT_KEYS = ("loss.mode", "loss.sft_target", "loss.lambda", "train.seed", "train.output_dir")
RESERVED_EVAL_KEYS = ("models", "output_dir")

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
        "(fapm follows the seeds of prune.source)",
    )
    arm_data: dict[ArmName, str] = Field(
        default_factory=dict,
        description="arm -> data.path of its own data set (a fit arm of `arms`), e.g. "
        "{sdft: runs/sdft_demo}; the other arms train on the fit config's data.path",
    )
    prune: PruneConfig = Field(
        default_factory=lambda: PruneConfig(), description="the fapm arm's settings"
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
            if key in RESERVED_FIT_KEYS:
                raise ValueError(
                    f"'{key}' is set by each arm / run; allowed: any fit key but "
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
        if "fapm" in self.arms:
            if self.prune.source not in self.arms:
                raise ValueError(
                    f"arm 'fapm' prunes prune.source '{self.prune.source}': add it to arms"
                )
            if "fapm" in self.all_seeds_arms and self.prune.source not in self.all_seeds_arms:
                raise ValueError(
                    f"all_seeds_arms: fapm follows the seeds of prune.source "
                    f"'{self.prune.source}'; add that arm instead"
                )
        return self

    def arm_seeds(self, arm: str) -> list[int]:
        """The seeds an arm runs at: every seed for all_seeds_arms, else the first; a prune
        arm follows its source."""
        if arm in PRUNE_ARMS:
            arm = self.prune.source
        return self.seeds if arm in self.all_seeds_arms else self.seeds[:1]

    def runs(self) -> list[tuple[str, int]]:
        """Every (trained arm, seed) in order: arms as listed, seeds as listed."""
        out: list[tuple[str, int]] = []
        for arm in self.arms:
            if ARMS[arm] is None:
                continue
            out.extend((arm, seed) for seed in self.arm_seeds(arm))
        return out

    def every_seed_arms(self) -> list[str]:
        """The arms (trained or pruned) run at every seed, in order."""
        source = self.prune.source
        return [a for a in self.arms if a in self.all_seeds_arms and ARMS[a]
                or a in PRUNE_ARMS and source in self.all_seeds_arms]

    def prune_runs(self) -> list[tuple[str, int]]:
        """Every (prune arm, seed): after the fits, from the source arm's final model."""
        return [(a, s) for a in self.arms if a in PRUNE_ARMS for s in self.arm_seeds(a)]

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

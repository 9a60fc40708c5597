"""The `raft-data build` pipeline config: every knob, validated, with the paper's defaults.

Values the paper leaves unspecified carry this project's defaults and say so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from raft_data.errors import RaftDataError
from schemas import config_files
from schemas.teacher_context import TEACHER_TEMPLATE, TeacherFormat

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

# SDFT's published self-distillation prompt (Yang et al. 2024); the paper gives none.
REWRITE_TEMPLATE = (
    "Below is an instruction with a reference answer. Using the reference answer as a "
    "guide, write your own response.\n\n### Instruction:\n{question}\n\n"
    "### Reference answer:\n{answer}"
)
FUSION_TEMPLATE = (
    "Merge the two answers below into one answer to the question. Keep every fact of the "
    "reference answer exactly (numbers, names, symbols) and write it in the style of the "
    "draft answer. Reply with the merged answer only.\n\n### Question:\n{question}\n\n"
    "### Reference answer:\n{answer}\n\n### Draft answer:\n{rewrite}"
)
JUDGE_TEMPLATE = (
    "Rate the candidate answer to the question from 1 (wrong or unhelpful) to 10 (correct, "
    "complete and clear). The reference answer is correct.\n\n### Question:\n{question}\n\n"
    "### Reference answer:\n{answer}\n\n### Candidate answer:\n{candidate}\n\n"
    "Reply with one line of the form 'Score: N'."
)
# Stage 2's teacher template (TEACHER_TEMPLATE) is imported from `schemas`: one definition
# for both stages; stage 1 renders it with `schemas.teacher_context_ids` to measure it.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Strict):
    """Where the (question, gold answer) pairs come from and which fields hold them."""

    path: str = Field(description="JSONL, CSV, Parquet file, a `datasets` folder, or a Hub dataset id")
    format: Literal["auto", "jsonl", "csv", "parquet", "datasets", "hub"] = Field(
        default="auto", description="auto: from the suffix (.jsonl, .csv/.tsv, .parquet), a folder, else a Hub id"
    )
    split: str = Field(default="train", description="split to read from a `datasets` folder or Hub dataset")
    question_field: str = Field(default="question", description="column holding the question x")
    answer_field: str = Field(default="answer", description="column holding the gold answer y")
    domain: str = Field(default="default", description="domain label of every row (unless domain_field gives one)")
    domain_field: str | None = Field(default=None, description="column holding each row's domain label")
    metadata_fields: list[str] = Field(
        default_factory=list, description="columns copied into each row's metadata (JSON)"
    )
    answer_check_field: str | None = Field(
        default=None,
        description="column holding each row's short answer (a number, choice letter, symbol or "
        "phrase) that rewrites and fused answers must state; kept in the row's metadata",
    )
    on_bad_row: Literal["quarantine", "fail"] = Field(
        default="quarantine",
        description="a row that cannot be used (not JSON or UTF-8, a field missing, empty or too "
        "long): quarantine it in rejected/ with file, row, field and reason, or stop with an error",
    )
    limit: int | None = Field(default=None, ge=1, description="first N rows only (trials); null = all")

    @model_validator(mode="after")
    def _keep_check_field(self) -> InputConfig:
        if self.answer_check_field and self.answer_check_field not in self.metadata_fields:
            self.metadata_fields = [*self.metadata_fields, self.answer_check_field]
        return self


class SamplingConfig(_Strict):
    """Sampling for one generation stage (the paper does not specify these)."""

    temperature: float = Field(default=0.7, ge=0.0, description="0 = greedy")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int = Field(
        default=192, ge=1, description="tokens per reply; a reply cut off here is `truncated`"
    )
    seed: int = Field(default=0, description="base of the per-request seeds (hashed with row id, stage, round)")


Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class BackendConfig(_Strict):
    """Which generation engine runs the models.

    `auto` takes vLLM when it is importable and transformers `generate` otherwise. On CPU,
    vLLM needs float32 (bf16 eager produced wrong text there, see STACK.md).
    """

    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="auto: vllm when importable, else transformers"
    )
    dtype: Dtype = Field(
        default="auto",
        description="auto: bfloat16 on GPU (vLLM: the model's own), float32 on CPU; part of "
        "every cache key",
    )
    batch_size: int = Field(default=32, ge=1, description="prompts per generate call (transformers)")
    max_model_len: int = Field(default=4096, ge=128, description="vLLM context length, tokens")
    gpu_memory_utilization: float = Field(
        default=0.85, gt=0.0, le=1.0, description="vLLM's share of GPU memory (GPU only)"
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per vLLM engine")
    enforce_eager: bool | None = Field(
        default=None, description="vLLM without CUDA graphs; null: eager on CPU, graphs on GPU"
    )
    quantization: str | None = Field(
        default=None,
        description="vLLM's quantization method (awq, gptq, fp8, bitsandbytes, ...); null: none, or "
        "the one the checkpoint declares; vLLM only; part of every cache key",
    )


class EngineSettings(_Strict):
    """One model role's engine settings; every key left out (null) takes `backend:`'s value."""

    dtype: Dtype | None = Field(default=None, description="as backend.dtype; null: backend.dtype")
    max_model_len: int | None = Field(
        default=None, ge=128, description="context length (prompts over it are rejected); null: backend's"
    )
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0.0, le=1.0, description="vLLM's share of GPU memory; null: backend's"
    )
    tensor_parallel_size: int | None = Field(default=None, ge=1, description="GPUs for this model; null: backend's")
    enforce_eager: bool | None = Field(default=None, description="vLLM without CUDA graphs; null: backend's")
    quantization: str | None = Field(default=None, description="vLLM quantization method; null: backend's")


class EmbedderSettings(_Strict):
    """The embedder (sentence-transformers, not a vLLM engine): only its dtype is a setting."""

    dtype: Dtype = Field(
        default="float32", description="embedding dtype; auto: float32 (MiniLM bf16 cosines differ by ~0.002)"
    )


class EnginesConfig(_Strict):
    """Per-role engine settings over `backend:` (the default for every role): e.g. a large
    fusion model on 4 GPUs with tensor parallelism while the original model takes one."""

    original: EngineSettings = Field(default_factory=EngineSettings, description="the original model")
    fusion: EngineSettings = Field(default_factory=EngineSettings, description="the fusion model")
    judges: list[EngineSettings] = Field(
        default_factory=list,
        description="one entry per judge, in fusion.judges order; judges past the list take backend:",
    )
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="the filter's embedder")


class RewriteConfig(_Strict):
    """Step 1: the original model rewrites each gold answer, conditioned on it."""

    prompt_template: str = Field(
        default=REWRITE_TEMPLATE,
        description="user turn asking for the rewrite y~; must contain {question} and {answer} "
        "(default: SDFT's self-distillation prompt; the paper gives none)",
    )
    system_prompt: str | None = Field(default=None, description="system turn; null = none")
    n: int = Field(default=1, ge=1, description="candidates per row; the best-passing one is kept")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="rewrite sampling")

    @field_validator("prompt_template")
    @classmethod
    def _has_fields(cls, value: str) -> str:
        return _check_template(value, {"question", "answer"})


class FilterConfig(_Strict):
    """Step 2: semantic filter (cosine >= tau) plus rapidfuzz string checks."""

    tau: float = Field(
        default=0.8, ge=-1.0, le=1.0,
        description="cosine similarity to gold a rewrite needs to be kept (the paper's tau)",
    )
    embedder: str = Field(default=DEFAULT_EMBEDDER, description="sentence-embedding model phi")
    embed_batch_size: int = Field(default=64, ge=1, description="texts per embedding call")
    copy_threshold: float = Field(
        default=97.0, ge=0.0, le=100.0,
        description="rapidfuzz ratio at or above which a rewrite is a copy of gold: accepted as `copy` "
        "when it contradicts nothing",
    )
    repetition_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="share of repeated segments / word 4-grams above which a rewrite is degenerate",
    )
    check_facts: bool = Field(
        default=True,
        description="reject rewrites whose numbers, symbols, names or choice letter contradict gold "
        "(or appear in neither gold nor the question); record gold facts they leave out",
    )
    omissions: Literal["flag", "fallback"] = Field(
        default="flag",
        description="a gold fact missing from the rewrite: `flag` records it on the row "
        "(missing_facts), `fallback` falls back to gold",
    )
    reject_truncated: bool = Field(
        default=True,
        description="fall back (truncated) when a rewrite or fusion was cut off at max_new_tokens",
    )
    check_answer: bool = Field(
        default=True,
        description="fall back (answer_missing) when a rewrite or fused answer does not state the "
        "row's short answer (input.answer_check_field, else a span derived from gold)",
    )
    fact_match_threshold: float = Field(
        default=90.0, ge=0.0, le=100.0,
        description="rapidfuzz ratio at which two names count as the same word (Aluminium/Aluminum)",
    )


class FusionConfig(_Strict):
    """Step 3: a fusion model merges gold and rewrite; judge models score each candidate."""

    enabled: bool = Field(default=True, description="false: accepted rewrites are final (no step 3)")
    model: str | None = Field(default=None, description="default: the original model")
    prompt_template: str = Field(
        default=FUSION_TEMPLATE,
        description="user turn asking for the fused y^; must contain {question}, {answer}, {rewrite}",
    )
    judges: list[str] = Field(default_factory=list, description="default: [the original model]")
    judge_template: str = Field(
        default=JUDGE_TEMPLATE,
        description="user turn asking a judge for 'Score: N'; must contain {question}, {answer}, "
        "{candidate}",
    )
    judge_prefill: str = Field(
        default="Score:",
        description="text the judge's reply is started with, so even small judges answer with a number",
    )
    rounds: int = Field(default=2, ge=1, description="fusion candidates drawn per row at most (R)")
    stop_score: float = Field(
        default=0.8, ge=0.0, le=1.0,
        description="stop drawing once the best mean judge score (scaled to [0, 1]) reaches this",
    )
    score_min: float = Field(default=1.0, description="lowest score of the judge scale (maps to 0)")
    score_max: float = Field(default=10.0, description="highest score of the judge scale (maps to 1)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="fusion sampling")
    judge_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, max_new_tokens=16),
        description="judge sampling (greedy, a short reply)",
    )
    refilter: bool = Field(
        default=True,
        description="also hold each fused candidate to tau against gold; the fact, answer and truncation "
        "checks always apply, so a fusion never replaces a rewrite with one that contradicts gold",
    )

    @field_validator("prompt_template")
    @classmethod
    def _fusion_fields(cls, value: str) -> str:
        return _check_template(value, {"question", "answer", "rewrite"})

    @field_validator("judge_template")
    @classmethod
    def _judge_fields(cls, value: str) -> str:
        return _check_template(value, {"question", "answer", "candidate"})


class TeacherContextConfig(_Strict):
    """Stage 2 feeds the teacher reference + question + trajectory: flag rows that won't fit.

    `template` and `format` must match stage 2's `teacher.template` / `teacher.format`:
    the count is `schemas.teacher_context_ids`, the very ids stage 2 builds.
    """

    template: str = Field(
        default=TEACHER_TEMPLATE,
        description="stage 2's teacher template; must contain {reference} and {question}",
    )
    format: TeacherFormat = Field(
        default="chat",
        description="chat: the template text as the user turn of the chat template (stage 2's "
        "default); plain: the text as is",
    )
    max_tokens: int = Field(
        default=2048, ge=16,
        description="teacher context limit (stage 2's teacher.max_context_tokens); rows over it are flagged",
    )
    trajectory_tokens: int = Field(default=256, ge=0, description="room kept for the sampled answer")

    @field_validator("template")
    @classmethod
    def _teacher_fields(cls, value: str) -> str:
        return _check_template(value, {"reference", "question"})


class OutputConfig(_Strict):
    """Where the dataset folder is written and what its Hub card says."""

    dir: str = Field(description="output folder: data/, rejected/, manifest.json, README.md; .raft/ holds state and logs")
    shard_size: int = Field(
        default=128, ge=1, description="rows per Parquet shard, the unit of resume"
    )
    license: str = Field(default="other", description="the card's license id (Hub metadata)")
    language: list[str] = Field(default_factory=lambda: ["en"], description="the card's language codes")


class PipelineConfig(_Strict):
    """A whole `raft-data build` run."""

    name: str = Field(description="pipeline name, recorded in the manifest and card")
    input: InputConfig
    output: OutputConfig
    model: str = Field(default=DEFAULT_MODEL, description="the original model (the one to fine-tune)")
    model_revision: str | None = Field(default=None, description="Hub revision of `model` (branch, tag or commit)")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    engines: EnginesConfig = Field(
        default_factory=EnginesConfig, description="per-model engine settings over backend:"
    )
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    teacher_context: TeacherContextConfig = Field(default_factory=TeacherContextConfig)
    measure_gap: bool = Field(
        default=True,
        description="measure the original model's NLL of gold and of the final answer per row "
        "(the compatibility gap)",
    )

    @model_validator(mode="after")
    def _judge_engines(self) -> PipelineConfig:
        have, judges = len(self.engines.judges), len(self.judge_models)
        if have > judges:
            raise ValueError(
                f"engines.judges has {have} entries but there {'is' if judges == 1 else 'are'} {judges} "
                f"judge{'' if judges == 1 else 's'} (fusion.judges; default [model]): one entry per judge"
            )
        return self

    def config_hash(self) -> str:
        """Hash of everything that changes the output (stable key order). Keys added later
        are left out while they hold the value that reproduces the earlier behaviour, so a
        folder built before they existed is still this config's build."""
        data = self.model_dump(mode="json")
        if self.engines == EnginesConfig():
            del data["engines"]
        if data["backend"]["quantization"] is None:
            del data["backend"]["quantization"]
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def fusion_model(self) -> str:
        return self.fusion.model or self.model

    @property
    def judge_models(self) -> list[str]:
        return self.fusion.judges or [self.model]


def _check_template(template: str, needed: set[str]) -> str:
    import string

    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = needed - names
    unknown = names - needed
    if missing:
        raise ValueError(f"template lacks placeholder(s) {sorted(missing)}")
    if unknown:
        raise ValueError(f"template has unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(needed)}")
    return template


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (value parsed as YAML) to a raw config dict."""
    return config_files.apply_overrides(data, overrides, RaftDataError)


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML pipeline config; relative paths inside it stay relative to the CWD."""
    data = apply_overrides(config_files.read_config_mapping(path, RaftDataError), overrides or [])
    return config_files.validate_config(PipelineConfig, data, str(path), RaftDataError, "raft-data config")

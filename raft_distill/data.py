"""Read the fused dataset D^ = {(x, y^)} and turn it into token ids for stage 2.

The only input is what `schemas` defines (RefinedRecord Parquet shards, optional
manifest), so stage 2 never depends on how stage 1 was run. Every row is either used or
counted under a skip reason; nothing is truncated (a truncated y^ would teach the student
to stop mid-answer, and a truncated teacher context would drop the privileged answer).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft_distill.config import DataConfig, LossConfig, TeacherConfig
from raft_distill.errors import DistillError
from schemas import RefinedRecord, read_manifest, read_records, shard_paths, teacher_context_ids
from schemas.chat import chat_prompt_ids, text_ids
from schemas.hub_dataset import looks_like_repo_id, resolve_dataset

log = logging.getLogger(__name__)

# the student's prompt when its tokenizer has no chat template; no trailing space, so no
# orphan whitespace token precedes z (see schemas.teacher_context)
FALLBACK_PROMPT = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Example:
    """One training row as token ids.

    prompt_ids: the student's prompt for x (chat template, question only).
    target_ids: the SFT target (y^ or y) followed by eos.
    teacher_ids: the teacher's context before z: `schemas.teacher_context_ids` (template
        with y^ and x; chat or plain), or the student's prompt_ids in on-policy mode.
    """

    id: str
    prompt_ids: list[int]
    target_ids: list[int]
    teacher_ids: list[int]


@dataclass
class Dataset:
    train: list[Example]
    eval: list[Example]
    skipped: Counter[str] = field(default_factory=Counter)
    source_rows: int = 0
    manifest_hash: str | None = None


def load_rows(folder: str | Path, revision: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Read every RefinedRecord row of a dataset folder or Hub dataset (schema-checked by `schemas`)."""
    if not Path(folder).exists() and looks_like_repo_id(str(folder)):
        folder = resolve_dataset(str(folder), revision)
    folder = Path(folder)
    if not folder.is_dir():
        raise DistillError(
            f"dataset folder '{folder}' does not exist; run `raft-data build` first or fix data.path"
        )
    paths = shard_paths(folder)
    if not paths:
        raise DistillError(f"dataset folder '{folder}' has no data/*.parquet shards")
    manifest_hash = None
    if (folder / "manifest.json").exists():
        manifest = read_manifest(folder)
        manifest_hash = manifest.config_hash
    table = read_records(paths, RefinedRecord, validate_rows=False)
    return table.to_pylist(), manifest_hash


def is_eval(row_id: str, seed: int, fraction: float) -> bool:
    """Deterministic split by id hash: the same row lands on the same side on every machine."""
    if fraction <= 0.0:
        return False
    digest = hashlib.sha256(f"{seed}\x1f{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def student_prompt_text(tokenizer: Any, question: str) -> str:
    """x as the student normally sees it: its chat template with the question as user turn."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return FALLBACK_PROMPT.format(question=question)


def teacher_context(
    tokenizer: Any, teacher: TeacherConfig, question: str, reference: str
) -> list[int]:
    """The answer-conditioned teacher context before z (METHOD.md step 2), as token ids.

    `schemas.teacher_context_ids`: the same ids stage 1 measured. In on-policy mode the
    caller uses the student's prompt ids instead.
    """
    return teacher_context_ids(tokenizer, question, reference, teacher.template, teacher.format)


def student_prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """`student_prompt_text` as ids, the question kept as data (`schemas.chat`)."""
    if getattr(tokenizer, "chat_template", None):
        return chat_prompt_ids(tokenizer, question)
    return text_ids(tokenizer, FALLBACK_PROMPT.format(question=question))


def _usable_rows(
    rows: list[dict[str, Any]], data: DataConfig, source: str, skipped: Counter[str]
) -> list[dict[str, Any]]:
    """Rows with a decision in `data.use_decisions` and not over stage 1's length; each
    other row counted in `skipped` under its reason (or an error, per data.on_over_length)."""
    kept = []
    for i, row in enumerate(rows):
        if row["decision"] not in data.use_decisions:
            skipped[f"decision_{row['decision']}"] += 1
            log.debug("row %d (id %s) skipped: decision %s", i, row["id"], row["decision"])
            continue
        if row["over_length"]:
            if data.on_over_length == "fail":
                raise DistillError(
                    f"{source}: row {i} (id {row['id']}) is flagged over_length by stage 1 "
                    f"({row.get('over_length_reason')}); set data.on_over_length: skip"
                )
            skipped["over_length_stage1"] += 1
            log.debug("row %d (id %s) skipped: over_length in stage 1", i, row["id"])
            continue
        kept.append(row)
    return kept


def build_dataset(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    data: DataConfig,
    loss: LossConfig,
    teacher: TeacherConfig,
    source: str = "dataset",
) -> Dataset:
    """Filter, split and tokenize rows; every dropped row is counted under its reason."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DistillError("the student tokenizer has no eos token; cannot end SFT targets")
    skipped: Counter[str] = Counter()
    kept = _usable_rows(rows, data, source, skipped)
    target_field = "final_answer" if loss.sft_target == "fused" else "gold_answer"
    prompts = [student_prompt_ids(tokenizer, r["question"]) for r in kept]
    # y^ is data: "<|im_end|>" inside it must not end the SFT target early
    targets = [text_ids(tokenizer, r[target_field]) for r in kept]
    if loss.mode == "on-policy":  # the teacher reads the student's own prompt
        contexts = [list(p) for p in prompts]
    else:
        contexts = [
            teacher_context(tokenizer, teacher, r["question"], r["final_answer"]) for r in kept
        ]
    train: list[Example] = []
    evals: list[Example] = []
    limits = (
        ("prompt", data.max_prompt_tokens),
        ("target", data.max_target_tokens),
        ("teacher_context", teacher.max_context_tokens),
    )
    for row, p, t, c in zip(kept, prompts, targets, contexts, strict=True):
        t = t + [int(eos)]
        for (name, limit), ids in zip(limits, (p, t, c), strict=True):
            if len(ids) > limit:
                if data.on_over_length == "fail":
                    raise DistillError(
                        f"{source}: id {row['id']}: {name} has {len(ids)} tokens > {limit}; "
                        f"raise the limit or set data.on_over_length: skip"
                    )
                skipped[f"over_length_{name}"] += 1
                log.debug("id %s skipped: %s has %d tokens > %d", row["id"], name, len(ids), limit)
                break
        else:
            example = Example(row["id"], p, t, c)
            (evals if is_eval(row["id"], data.seed, data.eval_fraction) else train).append(example)
    return Dataset(train, evals, skipped, len(rows))


def step_indices(step: int, batch_size: int, n_rows: int, seed: int) -> list[int]:
    """Row indices of optimizer step `step` (0-based): a stream of seeded epoch permutations.

    Depends only on the step number, so a resumed run picks up the data position exactly.
    """
    import random

    orders: dict[int, list[int]] = {}
    out = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(g, n_rows)
        if epoch not in orders:
            order = list(range(n_rows))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            orders[epoch] = order
        out.append(orders[epoch][pos])
    return out

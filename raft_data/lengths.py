"""Rows whose prompts cannot fit a model: the bound on every request a row leads to.

`load.check_lengths` and `load.scan_input` reject (`over_model_length`) a row whose longest
prompt plus the tokens it may generate would not fit its model's `max_model_len`, before
any request is sent. Tokens are counted with each model's own tokenizer, and only where a
row's size in bytes does not already decide (byte-level BPE tokenizers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raft_data.config import PipelineConfig
from raft_data.engines import config_key, role_settings
from raft_data.errors import RaftDataError
from raft_data.readers import bad_row
from schemas.records import RejectedRecord, SourceRecord

# Tokens kept where a generated text (a rewrite in the fusion prompt, a candidate in the
# judge prompt) joins the prompt text around it: re-encoding decoded text and merges at
# the two joins can add a few tokens to its own count.
JOIN_MARGIN = 8


def _byte_level_max_token_bytes(tokenizer: Any) -> int | None:
    """The most text bytes one token can cover, for a byte-level BPE tokenizer without a
    normalizer (every token then covers at least one byte and at most this many); None
    for other tokenizers, whose prompts are always counted exactly."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = {p.get("type") for p in parts}
    if (
        spec.get("normalizer") is not None
        or (spec.get("model") or {}).get("type") != "BPE"
        or "ByteLevel" not in kinds
        or not kinds <= {"ByteLevel", "Split", "Digits"}
        or any(p.get("behavior") == "Removed" for p in parts)
    ):
        return None
    longest = max((len(t) for t in spec["model"]["vocab"]), default=1)  # one char per byte
    added = max((len(t["content"].encode("utf-8")) for t in spec.get("added_tokens", [])), default=1)
    return max(longest, added, 1)


class _Counter:
    """Token counts of one tokenizer's chat prompts, from byte bounds when they decide."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.max_token_bytes = _byte_level_max_token_bytes(tokenizer)
        self._wrap: dict[str | None, int | None] = {}

    def render(self, user: str, system: str | None) -> str:
        # the text `backends.render_chat` tokenizes
        messages = [{"role": "user", "content": user}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def wrap_bytes(self, system: str | None) -> int | None:
        """Bytes the chat template adds around the user text; None if it does not just
        place the text once."""
        if system not in self._wrap:
            mark = "RAFT-USER-TEXT-7f3a"
            text = self.render(mark, system)
            self._wrap[system] = len(text.encode("utf-8")) - len(mark) if text.count(mark) == 1 else None
        return self._wrap[system]

    def count(self, user: str, system: str | None, budget: int) -> tuple[int, bool, int] | None:
        """None if the chat prompt surely has at most `budget` tokens; else (tokens, exact?,
        bytes): an exact count, or a lower bound already over the budget."""
        from raft_data.backends import render_chat

        wrap = self.wrap_bytes(system) if self.max_token_bytes is not None else None
        if wrap is not None and wrap + len(user.encode("utf-8")) <= budget:
            return None  # a byte-level token covers at least one byte
        size = len(self.render(user, system).encode("utf-8"))
        if self.max_token_bytes is not None and -(-size // self.max_token_bytes) > budget:
            return -(-size // self.max_token_bytes), False, size
        tokens = len(render_chat(self.tokenizer, user, system))
        return (tokens, True, size) if tokens > budget else None


@dataclass(frozen=True)
class _Prompt:
    """The longest prompt a stage builds for a row, and the tokens that may come on top."""

    stage: str
    counter: _Counter
    template: str
    system: str | None
    fill: dict[str, str]  # placeholders filled by generated text (left empty here)
    extra: int  # tokens appended to the chat prompt (the judge's prefill)
    reserve: int  # generated text quoted in the prompt (+ margin) and the generation
    limit: int  # the role's max_model_len
    limit_key: str  # where that limit is set


def _length_prompts(cfg: PipelineConfig) -> list[_Prompt]:
    """Every request a row leads to, with a bound on its length:

    - rewrite: chat(rewrite template(q, a)) + rewrite.max_new_tokens generated;
    - fusion: chat(fusion template(q, a, rewrite)) + fusion.max_new_tokens, where the
      rewrite has at most rewrite.max_new_tokens tokens (+ JOIN_MARGIN);
    - each judge: chat(judge template(q, a, candidate)) + prefill + judge max_new_tokens,
      the candidate having at most fusion.max_new_tokens tokens (+ JOIN_MARGIN).

    The NLL measurements ask for chat(q) + an answer no longer than these, so they fit too.
    """
    from transformers import AutoTokenizer

    from schemas.errors import SchemaError
    from schemas.model_registry import resolve_model

    counters: dict[str, _Counter] = {}

    def counter(name: str, revision: str | None = None) -> _Counter:
        try:
            path = str(resolve_model(name, revision).path)
        except SchemaError as err:
            raise RaftDataError(str(err)) from None
        if path not in counters:
            counters[path] = _Counter(AutoTokenizer.from_pretrained(path))
        return counters[path]

    def limit(role: str) -> tuple[int, str]:
        own = role_settings(cfg, role).max_model_len
        return own, (f"{config_key(role)}.max_model_len" if own != cfg.backend.max_model_len else "backend.max_model_len")

    rw = cfg.rewrite.sampling.max_new_tokens
    prompts = [_Prompt("rewrite", counter(cfg.model, cfg.model_revision), cfg.rewrite.prompt_template,
                       cfg.rewrite.system_prompt, {}, 0, rw, *limit("original"))]
    if cfg.fusion.enabled:
        fu = cfg.fusion.sampling.max_new_tokens
        prompts.append(_Prompt("fusion", counter(cfg.fusion_model), cfg.fusion.prompt_template, None,
                               {"rewrite": ""}, 0, rw + JOIN_MARGIN + fu, *limit("fusion")))
        judges = {(name, limit(f"judge_{i}")): None for i, name in enumerate(cfg.judge_models)}
        for name, (most, key) in judges:
            judge = counter(name)
            prefill = len(judge.tokenizer(cfg.fusion.judge_prefill, add_special_tokens=False)["input_ids"])
            prompts.append(_Prompt("judge", judge, cfg.fusion.judge_template, None, {"candidate": ""},
                                   prefill, fu + JOIN_MARGIN + cfg.fusion.judge_sampling.max_new_tokens, most, key))
    return prompts


def length_check(cfg: PipelineConfig) -> Callable[[SourceRecord, list[RejectedRecord], str], bool]:
    """record -> whether it fits every prompt; a row that does not is rejected into the list."""
    prompts = _length_prompts(cfg)

    def fits(record: SourceRecord, rejected: list[RejectedRecord], source: str) -> bool:
        for p in prompts:
            user = p.template.format(question=record.question, answer=record.gold_answer, **p.fill)
            found = p.counter.count(user, p.system, p.limit - p.reserve - p.extra)
            if found is None:
                continue
            tokens, exact, size = found
            tokens += p.extra
            long_q = len(record.question.encode("utf-8")) > len(record.gold_answer.encode("utf-8"))
            fld = cfg.input.question_field if long_q else cfg.input.answer_field
            reason = (
                f"over_model_length: the {p.stage} prompt has {'' if exact else 'at least '}{tokens} "
                f"tokens ({size} bytes); with the {p.reserve} kept for generated text it needs "
                f"{tokens + p.reserve} > {p.limit_key} {p.limit}"
            )
            raw = {
                cfg.input.question_field: record.question,
                cfg.input.answer_field: record.gold_answer,
                "domain": record.domain,
                "metadata": json.loads(record.metadata),
            }
            bad_row(cfg.input.on_bad_row, rejected, source, record.source_row, raw, fld, reason)
            return False
        return True

    return fits

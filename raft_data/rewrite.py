"""Step 1: the original model writes its own answer given question and gold answer.

y~ ~ p(. | x, y) (docs/METHOD.md stage 1.1): the prompt shows the gold answer as a reference,
so the rewrite keeps its facts in the model's own words and format.
"""

from __future__ import annotations

from typing import Any

from raft_data.backends import Backend, Generation, render_chat
from raft_data.cache import CallCache
from raft_data.calls import generate_cached
from raft_data.config import RewriteConfig
from raft_data.seeds import request_seed
from schemas.manifest import StageTiming
from schemas.records import SourceRecord


def rewrite_prompt_ids(tokenizer: Any, record: SourceRecord, cfg: RewriteConfig) -> list[int]:
    user = cfg.prompt_template.format(question=record.question, answer=record.gold_answer)
    return render_chat(tokenizer, user, cfg.system_prompt)


def rewrite(
    backend: Backend,
    cache: CallCache,
    records: list[SourceRecord],
    cfg: RewriteConfig,
    timing: StageTiming,
) -> list[list[Generation]]:
    """`cfg.n` rewrite candidates per record, in record order, with how each one ended."""
    prompts: list[list[int]] = []
    seeds: list[int] = []
    for record in records:
        ids = rewrite_prompt_ids(backend.tokenizer, record, cfg)
        for j in range(cfg.n):
            prompts.append(ids)
            seeds.append(request_seed(cfg.sampling.seed, "rewrite", record.id, j))
    outs = generate_cached(backend, cache, "rewrite", prompts, cfg.sampling, seeds, timing, "rewrite")
    return [outs[i * cfg.n : (i + 1) * cfg.n] for i in range(len(records))]

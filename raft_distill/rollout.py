"""Student rollout: z ~ S(. | x), ONE trajectory per prompt (METHOD.md stage 2, step 1).

One batched `generate` call (KV cache, left padding) per optimizer step covers all the
process's micro-batches, so the trajectories do not depend on the micro-batch split. The
caller seeds the RNG per (step, process), which makes a resumed run sample the same z.

With `rollout.target_length_factor` each row has its own budget (`row_caps`): a row that
reaches it stops (a stopping criterion marks it finished, as an eos does) and its z is cut
there. Finished rows still take part in each draw (`multinomial` draws for the whole batch),
so the other rows sample what they would have, and a capped z is the uncapped z cut at its
cap; the batch stops once every row has ended or hit its cap.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from raft_distill.config import RolloutConfig


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: the last prompt token sits at the same column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def cut_at_eos(row: list[int], eos_ids: set[int]) -> list[int]:
    """A trajectory ends with (and includes) its first eos; later tokens are padding."""
    for i, tok in enumerate(row):
        if tok in eos_ids:
            return row[: i + 1]
    return row


def row_caps(rollout: RolloutConfig, target_lengths: list[int]) -> list[int]:
    """Each row's trajectory budget: rollout.max_new_tokens, or with
    rollout.target_length_factor ceil(factor x its SFT target tokens), at most that."""
    factor = rollout.target_length_factor
    if factor is None:
        return [rollout.max_new_tokens] * len(target_lengths)
    return [min(rollout.max_new_tokens, max(1, math.ceil(factor * n))) for n in target_lengths]


class RowBudget(StoppingCriteria):
    """Marks a row finished once it has generated its cap of new tokens."""

    def __init__(self, prompt_width: int, caps: list[int]) -> None:
        self.prompt_width = prompt_width
        self.caps = torch.tensor(caps, dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_width
        return (self.caps <= generated).to(input_ids.device)


@torch.no_grad()
def sample_trajectories(
    model: Any,
    prompts: list[list[int]],
    rollout: RolloutConfig,
    pad_id: int,
    eos_ids: set[int],
    device: torch.device,
    autocast: bool = False,
    gather_params: Any = None,
    caps: list[int] | None = None,
) -> list[list[int]]:
    """Sample one trajectory per prompt with HF generate; returns token ids cut at eos
    (and at the row's cap in `caps`, from `row_caps`; None: max_new_tokens for all).

    `gather_params` is a context manager factory for sharded (FSDP) models that gathers
    the full weights for generation; None for unsharded models.
    """
    if not prompts:
        return []
    ids, mask = left_pad(prompts, pad_id)
    # no criterion of ours without caps: the default rollout is generate's own
    stop = StoppingCriteriaList([RowBudget(ids.shape[1], caps)]) if caps else None
    caps = caps or [rollout.max_new_tokens] * len(prompts)
    greedy = rollout.temperature == 0.0
    gen = GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else rollout.temperature,
        top_p=None if greedy else rollout.top_p,
        top_k=None if greedy else rollout.top_k,
        max_new_tokens=max(caps),
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids),
        use_cache=True,
    )
    was_training = model.training
    model.eval()
    gather = gather_params() if gather_params is not None else contextlib.nullcontext()
    try:
        with (
            gather,
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast),
        ):
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen,
                stopping_criteria=stop,
            )
    finally:
        model.train(was_training)
    new = out[:, ids.shape[1] :].tolist()
    return [cut_at_eos(row[:cap], eos_ids) for row, cap in zip(new, caps, strict=True)]

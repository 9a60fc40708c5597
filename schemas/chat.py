"""Token ids of chat prompts and answers in which data stays data.

Both stages render prompts from data set text (questions, gold and fused answers). A row
that contains "<|im_end|>" or "<|im_start|>system" must not close the user turn and open
one of its own, nor end an SFT target early: that is prompt injection through the data.
So the chat template is rendered around placeholders, its own pieces are tokenised
normally, and the data with `split_special_tokens=True`, where control-token text becomes
plain characters. Ordinary text gets exactly the ids a whole-string tokenisation gives
(tested on every demo row with SmolLM2's tokenizer).
"""

from __future__ import annotations

from typing import Any

_SLOT = "\u27e6raft-content-{}\u27e7"


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of data text; control-token strings in it are split into ordinary tokens."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _template_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def chat_prompt_ids(tokenizer: Any, user: str, system: str | None = None) -> list[int]:
    """A one-turn chat prompt ending where the assistant starts to write (generation prompt)."""
    contents = [user] if system is None else [system, user]
    messages = [{"role": "user", "content": _SLOT.format(len(contents) - 1)}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": _SLOT.format(0)})
    rest = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    ids: list[int] = []
    for i, content in enumerate(contents):
        before, sep, rest = rest.partition(_SLOT.format(i))
        if not sep:
            raise ValueError(
                "the model's chat template rewrote the message text it was given, so data "
                "cannot be kept apart from control tokens; use a template that inserts "
                "message content verbatim"
            )
        ids += _template_ids(tokenizer, before) + text_ids(tokenizer, content)
    return ids + _template_ids(tokenizer, rest)

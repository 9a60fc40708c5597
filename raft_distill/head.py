"""The LM head as the model itself applies it: logits = post(h . W^T + b).

The teacher's chunked top-K and the student's gathered and chunked logits (`loss.py`) never
call lm_head (that would materialise [N, V] logits); they repeat what the model's forward
does after the backbone: the head's bias, a logit scale, final-logit soft-capping
(METHOD.md step 2, implementation note; TRL shipped this bug for Gemma-2 in its fused
path). `logit_post` reads the known post-processing from the config; `check_head` compares
the result with the model's own logits once at load time and refuses a model whose forward
does something else, naming the config attributes that look responsible.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from raft_distill.errors import DistillError
from raft_distill.loss import LogitPost

# config attributes that may post-process logits, named in the refusal (rope_scaling etc. not)
_SUSPECT = re.compile(r"logit|softcap|multiplier|lm_head|scal")
_NOT_HEAD = re.compile(r"^(rope|attn|attention|query|embedding)")


def unwrap(model: Any) -> Any:
    """A peft model's transformers model (its adapters injected and active unless disabled
    by the peft model); any other model as is."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def backbone(model: Any) -> Any:
    """The transformer body of a causal LM (final norm included, no lm_head); a peft
    model's through its base model."""
    model = unwrap(model)
    return getattr(model, model.base_model_prefix)


def head_bias(model: Any) -> Tensor | None:
    """lm_head's bias (Phi-1/2 have one), or None."""
    bias = getattr(model.get_output_embeddings(), "bias", None)
    return bias if isinstance(bias, Tensor) else None


def logit_post(config: Any) -> LogitPost:
    """The model's post-processing after lm_head, as transformers' forward applies it.

    final_logit_softcapping (Gemma-2/3): c * tanh(x / c); logit_scale (Cohere): x * s;
    logits_scaling: x / s (Granite), x * s (HyperCLOVA X). Anything else is caught by
    `check_head`.
    """
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:
        s = float(config.logits_scaling)
        scale = scale * s if getattr(config, "model_type", "") == "hyperclovax" else scale / s
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitPost(scale=scale, softcap=None if softcap is None else float(softcap))


def head_logits(model: Any, hidden: Tensor) -> Tensor:
    """Full float32 logits post(h . W^T + b) for a few positions (checks and tests)."""
    logits = hidden.float() @ model.get_output_embeddings().weight.float().t()
    bias = head_bias(model)
    if bias is not None:
        logits = logits + bias.float()
    return logit_post(model.config)(logits)


@torch.no_grad()
def check_head(model: Any, name: str, tokens: int = 8) -> None:
    """Refuse a model whose own logits are not `head_logits` of its backbone's output.

    One forward of `tokens` arbitrary ids through the model and through the backbone.
    """
    weight = model.get_output_embeddings().weight
    ids = (torch.arange(tokens, device=weight.device) * 7919 % weight.shape[0])[None]
    own = model(input_ids=ids, use_cache=False).logits.float()
    ours = head_logits(model, backbone(model)(input_ids=ids, use_cache=False).last_hidden_state)
    diff = float((own - ours).abs().max())
    if diff <= 1e-3 * (1.0 + float(own.abs().max())):
        return
    config = model.config.to_dict()
    suspects = {k: v for k, v in config.items() if _SUSPECT.search(k) and not _NOT_HEAD.match(k)}
    raise DistillError(
        f"model '{name}': its logits differ from lm_head(h) with the post-processing this "
        f"project applies (lm_head bias, final_logit_softcapping, logit_scale, logits_scaling) "
        f"by up to {diff:.3g}; config attributes that may post-process logits: "
        f"{suspects or 'none found'}. Top-K distillation of such a model is not supported."
    )

"""head.py: the teacher's top-K and the student's logits are the model's own logits.

Tiny random models built here whose heads post-process: Gemma-2 (final-logit
soft-capping), Cohere (logit_scale), Phi (lm_head bias). Against `model(input_ids).logits`:
teacher top-K values, ids and logsumexp; the student's gathered logits and SFT CE, with
gradients. A head this project does not know is refused, naming the config attribute.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from raft_distill import teacher
from raft_distill.errors import DistillError
from raft_distill.head import backbone, check_head, head_logits, logit_post
from raft_distill.student import StudentScorer

VOCAB = 64
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    eos_token_id=1,
    bos_token_id=0,
    pad_token_id=2,
)


def _gemma2() -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(head_dim=8, final_logit_softcapping=2.0, **COMMON))


def _cohere() -> Any:
    from transformers import CohereConfig, CohereForCausalLM

    return CohereForCausalLM(CohereConfig(logit_scale=0.25, **COMMON))


def _phi() -> Any:
    from transformers import PhiConfig, PhiForCausalLM

    return PhiForCausalLM(PhiConfig(**COMMON))


def _model(make: Any) -> Any:
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():  # logits large enough for soft-capping / scale to matter
        model.get_output_embeddings().weight.mul_(40.0)
        bias = model.get_output_embeddings().bias
        if bias is not None:
            bias.normal_(0.0, 3.0)
    return model


@pytest.mark.parametrize("make", [_gemma2, _cohere, _phi], ids=["softcap", "scale", "bias"])
def test_heads_match_the_models_own_logits(make):
    model = _model(make)
    check_head(model, "tiny")
    g = torch.Generator().manual_seed(1)
    contexts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (4, 6)]
    z = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (5, 3)]
    packed = teacher.pack(contexts, z, pad_id=2)
    with torch.no_grad():
        own = [
            model(input_ids=torch.tensor([c + zi])).logits[0].float()
            for c, zi in zip(contexts, z, strict=True)
        ]
    rows = torch.cat(
        [o[len(c) - 1 : len(c) - 1 + len(zi)] for o, c, zi in zip(own, contexts, z, strict=True)]
    )
    raw_h = backbone(model)(input_ids=packed.input_ids, attention_mask=packed.attention_mask)
    raw = (
        raw_h.last_hidden_state[packed.batch_index, packed.position_index]
        @ model.get_output_embeddings().weight.t()
    )
    assert (raw - rows).abs().max() > 0.1  # the post-processing matters here

    k = 8
    scores = teacher.score(model, packed, k, chunk=3, device=torch.device("cpu"))
    top = torch.topk(rows, k)
    assert torch.allclose(scores.topk_values, top.values, atol=1e-4)
    assert torch.equal(scores.topk_ids, top.indices)
    assert torch.allclose(scores.logsumexp, torch.logsumexp(rows, -1), atol=1e-4)

    scorer = StudentScorer(model, chunk=3)
    inputs = (packed.input_ids, packed.attention_mask, packed.batch_index, packed.position_index)
    v_k = scorer(*inputs, "kl", topk_ids=scores.topk_ids)
    ce = scorer(*inputs, "sft", targets=packed.targets)
    probe = torch.randn(v_k.shape, generator=g)
    ours = (v_k * probe).sum() + ce
    grads = torch.autograd.grad(ours, list(model.parameters()))

    full = torch.cat(
        [
            model(input_ids=torch.tensor([c + zi])).logits[0, len(c) - 1 : len(c) - 1 + len(zi)]
            for c, zi in zip(contexts, z, strict=True)
        ]
    ).float()
    assert torch.allclose(v_k, full.gather(-1, scores.topk_ids), atol=1e-4)
    ref_ce = F.cross_entropy(full, packed.targets, reduction="sum")
    assert torch.allclose(ce, ref_ce, atol=1e-4)
    ref = (full.gather(-1, scores.topk_ids) * probe).sum() + ref_ce
    for got, want in zip(grads, torch.autograd.grad(ref, list(model.parameters())), strict=True):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-3)


def test_logit_post_reads_the_config():
    post = logit_post(_gemma2().config)
    assert post.softcap == 2.0 and post.scale == 1.0
    assert logit_post(_cohere().config).scale == 0.25
    assert logit_post(_phi().config).softcap is None


def test_an_unknown_head_is_refused_naming_the_attribute():
    from transformers import LlamaConfig, LlamaForCausalLM

    class Multiplied(LlamaForCausalLM):  # a forward that post-processes in its own way
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * self.config.output_logit_multiplier
            return out

    torch.manual_seed(0)
    model = Multiplied(LlamaConfig(output_logit_multiplier=3.0, **COMMON)).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    with pytest.raises(DistillError, match="'tiny'.*output_logit_multiplier"):
        check_head(model, "tiny")
    h = backbone(model)(input_ids=torch.tensor([[3, 4]])).last_hidden_state
    assert head_logits(model, h).shape == (1, 2, VOCAB)


def test_tf32_setting_is_applied_only_on_cuda_and_only_when_set() -> None:
    """train.tf32 (as transformers' TrainingArguments.tf32): True/False set torch's TF32
    matmul flags on CUDA (the fp32 lm_head chunks run on tensor cores); None leaves torch's
    own setting; on CPU nothing is touched."""
    from raft_distill.student import apply_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
        assert apply_tf32(None, torch.device("cuda")) is False  # torch's own: off for matmuls
        assert torch.backends.cudnn.allow_tf32
        assert apply_tf32(True, torch.device("cpu")) is False and not torch.backends.cuda.matmul.allow_tf32
        assert apply_tf32(True, torch.device("cuda")) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert apply_tf32(False, torch.device("cuda")) is False
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

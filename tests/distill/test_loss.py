"""loss.py against a float64 brute-force reading of METHOD.md stage 2 steps 3-4."""

from __future__ import annotations

import math

import pytest
import torch

from raft_distill.balance import combine
from raft_distill.loss import (
    LogitPost,
    chunked_ce_sum,
    chunked_topk,
    gathered_logits,
    kl_sequence_sum,
    padded_kl_loss,
    sft_token_ce_sum,
    topk_forward_kl,
    topk_mass,
)


def brute_kl(u_full, v_full, mask, ids, temperature):
    """L_KL = T^2 mean_i (1/L_i) sum_t KL(q_t || p_t), loops in float64 (METHOD.md step 3)."""
    total = 0.0
    n_seq = u_full.shape[0]
    for i in range(n_seq):
        length = int(mask[i].sum())
        seq = 0.0
        for t in range(u_full.shape[1]):
            if not mask[i, t]:
                continue
            u = [float(u_full[i, t, j]) / temperature for j in ids[i, t]]
            v = [float(v_full[i, t, j]) / temperature for j in ids[i, t]]
            finite = [x for x in u if x != -math.inf]
            zu = max(finite) + math.log(sum(math.exp(x - max(finite)) for x in finite))
            zv = max(v) + math.log(sum(math.exp(x - max(v)) for x in v))
            for a, b in zip(u, v, strict=True):
                if a == -math.inf:
                    continue
                q = math.exp(a - zu)
                seq += q * ((a - zu) - (b - zv))
        total += seq / length
    return temperature**2 * total / n_seq


def _random_case(seed: int, batch=3, length=5, vocab=40):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64) * 3
    v = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64) * 3
    u[0, 0, :10] = 2.5  # ties, some straddling the top-K boundary
    u[1, 2, 5:] = -math.inf  # fewer finite teacher logits than K
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # padding
    mask[2, :1] = False  # a prompt position
    return u, v, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 8, 40])
def test_topk_kl_matches_brute_force(seed, k):
    u, v, mask = _random_case(seed)
    temperature = 1.5
    ids = torch.topk(u, k, dim=-1).indices
    u_k = u.gather(-1, ids)
    v_k = v.gather(-1, ids)
    got = padded_kl_loss(u_k, v_k, mask, temperature, n_sequences=u.shape[0])
    want = brute_kl(u, v, mask, ids, temperature)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_padding_and_prompt_positions_do_not_count():
    u, v, mask = _random_case(3)
    ids = torch.topk(u, 8, dim=-1).indices
    u_k, v_k = u.gather(-1, ids), v.gather(-1, ids)
    base = padded_kl_loss(u_k, v_k, mask, 1.5, 3)
    v_k2 = v_k.clone()
    v_k2[~mask] = torch.randn_like(v_k2[~mask]) * 100  # garbage where masked out
    assert float(padded_kl_loss(u_k, v_k2, mask, 1.5, 3)) == pytest.approx(float(base), rel=1e-12)
    logits = torch.randn(2, 6, 30, dtype=torch.float64)
    targets = torch.randint(0, 30, (2, 6))
    m = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    ce = sft_token_ce_sum(logits, targets, m)
    logits2 = logits.clone()
    logits2[~m] = torch.randn_like(logits2[~m]) * 100
    targets2 = targets.clone()
    targets2[~m] = 0
    assert float(sft_token_ce_sum(logits2, targets2, m)) == pytest.approx(float(ce), rel=1e-6)
    brute = sum(
        -torch.log_softmax(logits[i, t], -1)[targets[i, t]].item()
        for i in range(2)
        for t in range(6)
        if m[i, t]
    )
    assert float(ce) == pytest.approx(brute, rel=1e-6)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    u = torch.randn(7, 16)
    assert torch.allclose(topk_forward_kl(u, u, 1.5), torch.zeros(7), atol=1e-6)
    assert (topk_forward_kl(u, torch.randn(7, 16), 1.5) > 0).all()


def test_gathered_logits_equal_full_logits_gather_with_grads():
    g = torch.Generator().manual_seed(0)
    n, h, vocab, k = 13, 12, 50, 7
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).float().requires_grad_()
    weight = torch.randn(vocab, h, generator=g).requires_grad_()
    ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(n)])
    ids[0, :] = 3  # a repeated id: grads must accumulate
    upstream = torch.randn(n, k, generator=g)
    got = gathered_logits(hidden, weight, ids, chunk=4)
    (got * upstream).sum().backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    want = (hidden @ weight.t()).gather(-1, ids)
    (want * upstream).sum().backward()
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(gh, hidden.grad, atol=1e-5)
    assert torch.allclose(gw, weight.grad, atol=1e-5)


def test_chunked_topk_and_mass_match_full_logits():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(11, 8, generator=g)
    weight = torch.randn(60, 8, generator=g)
    values, ids, lse = chunked_topk(hidden, weight, k=9, chunk=4)
    full = hidden @ weight.t()
    top = torch.topk(full, 9, dim=-1)
    assert torch.allclose(values, top.values, atol=1e-5)
    assert torch.equal(ids, top.indices)
    assert torch.allclose(lse, torch.logsumexp(full, -1), atol=1e-5)
    mass = topk_mass(values, lse)
    want = torch.softmax(full.double(), -1).gather(-1, top.indices).sum(-1)
    assert torch.allclose(mass.double(), want, atol=1e-5)
    values, _, _ = chunked_topk(hidden, weight, k=60, chunk=5)
    assert torch.allclose(topk_mass(values, lse), torch.ones(11), atol=1e-5)


@pytest.mark.parametrize("torch_op", [True, False], ids=["linear_cross_entropy", "checkpointed"])
def test_chunked_ce_matches_full_with_grads(torch_op, monkeypatch):
    """Both forms: torch's chunked op, and the checkpointed one (soft-capped heads, or a
    torch older than 2.13, which a GPU vLLM may pin)."""
    if not torch_op:
        import raft_distill.loss

        monkeypatch.setattr(raft_distill.loss, "_LINEAR_CE_OPTIONS", None)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(10, 8, generator=g, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 30, (10,), generator=g)
    got = chunked_ce_sum(hidden, weight, targets, chunk=3)
    got.backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    want = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    want.backward()
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(gh, hidden.grad, atol=1e-5)
    assert torch.allclose(gw, weight.grad, atol=1e-5)


def _matmuls(run) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    names = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")
    return sum(e.count for e in prof.key_averages() if e.key in names)


def test_chunked_ce_backward_recomputes_nothing():
    """torch's chunked `F.linear_cross_entropy` makes each chunk's gradients in the forward
    pass (logits, grad_h, grad_W: 3 matmuls per chunk) and the backward only scales them;
    the checkpointed form recomputed each chunk's logits in backward and made a full
    [V, H] weight gradient per chunk (3 more matmuls per chunk)."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(12, 8, generator=g, requires_grad=True)
    weight = torch.randn(40, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 40, (12,), generator=g)
    out: list[torch.Tensor] = []
    assert _matmuls(lambda: out.append(chunked_ce_sum(hidden, weight, targets, chunk=4))) == 3 * 3
    assert _matmuls(lambda: out[0].backward()) == 0


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_chunked_ce_with_scale_and_bias_matches_full(scale):
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(9, 8, generator=g, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, requires_grad=True)
    bias = torch.randn(30, generator=g, requires_grad=True)
    targets = torch.randint(0, 30, (9,), generator=g)
    got = chunked_ce_sum(hidden, weight, targets, chunk=4, bias=bias, post=LogitPost(scale=scale))
    got_grads = torch.autograd.grad(got, [hidden, weight, bias])
    logits = (hidden @ weight.t() + bias) * scale
    want = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    want_grads = torch.autograd.grad(want, [hidden, weight, bias])
    assert torch.allclose(got, want, atol=1e-4)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _step_loss(splits, u, v_param, mask, targets_logits, targets, tmask, lam):
    """The train loop's normalisation: each micro-batch divides by the step's global counts."""
    temperature = 1.5
    n_seq = u.shape[0]
    n_tok = int(tmask.sum())
    total = 0.0
    for part in splits:
        kl = topk_forward_kl(u[part], v_param[part], temperature)
        m = mask[part].float()
        w = m / m.sum(1, keepdim=True)
        kl_part = kl_sequence_sum(kl, w, temperature) / n_seq
        sft_part = sft_token_ce_sum(targets_logits[part], targets[part], tmask[part]) / n_tok
        loss = combine(sft_part, kl_part, lam)
        loss.backward()
        total += float(loss.detach())
    return total


@pytest.mark.parametrize("sizes", [[4], [2, 2], [1, 1, 1, 1], [3, 1]])
def test_micro_batch_split_invariance(sizes):
    g = torch.Generator().manual_seed(5)
    u = torch.randn(4, 6, 8, generator=g)
    v0 = torch.randn(4, 6, 8, generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    s0 = torch.randn(4, 5, 20, generator=g)
    targets = torch.randint(0, 20, (4, 5), generator=g)
    tmask = torch.ones(4, 5, dtype=torch.bool)
    tmask[0, 3:] = False
    results = []
    for split in ([4], sizes):
        v = v0.clone().requires_grad_()
        s = s0.clone().requires_grad_()
        starts = [sum(split[:i]) for i in range(len(split))]
        parts = [slice(a, a + n) for a, n in zip(starts, split, strict=True)]
        loss = _step_loss(parts, u, v, mask, s, targets, tmask, lam=0.7)
        results.append((loss, v.grad.clone(), s.grad.clone()))
    (l1, gv1, gs1), (l2, gv2, gs2) = results
    assert l1 == pytest.approx(l2, rel=1e-6)
    assert torch.allclose(gv1, gv2, atol=1e-7)
    assert torch.allclose(gs1, gs2, atol=1e-7)
    full = padded_kl_loss(u, v0, mask, 1.5, 4) * 0.7 + sft_token_ce_sum(s0, targets, tmask) / int(
        tmask.sum()
    )
    assert l1 == pytest.approx(float(full), rel=1e-6)

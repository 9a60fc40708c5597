"""balance.py: bias-corrected EMA against hand-worked values (METHOD.md stage 2 step 5)."""

from __future__ import annotations

import pytest
import torch

from raft_distill.balance import EmaBalance, FixedBalance, combine


def test_ema_hand_worked_values():
    b = EmaBalance(beta=0.9, eps=1e-8)
    # step 1: m = 0.1 * L; bias correction 1 - 0.9 = 0.1 gives back L exactly
    assert b.update(2.0, 4.0) == pytest.approx(2.0 / (4.0 + 1e-8))
    assert b.m_sft == pytest.approx(0.2) and b.m_kl == pytest.approx(0.4)
    # step 2: m_sft = 0.9*0.2 + 0.1*1 = 0.28, m_kl = 0.9*0.4 + 0.1*1 = 0.46, correction 0.19
    lam = b.update(1.0, 1.0)
    assert b.m_sft == pytest.approx(0.28) and b.m_kl == pytest.approx(0.46)
    assert lam == pytest.approx((0.28 / 0.19) / (0.46 / 0.19 + 1e-8))
    assert lam == pytest.approx(0.6086956, rel=1e-6)


def test_eps_guards_zero_kl():
    b = EmaBalance(beta=0.9, eps=1e-8)
    assert b.update(3.0, 0.0) == pytest.approx(3.0 / 1e-8)


def test_state_round_trip_continues_identically():
    a = EmaBalance()
    for pair in [(1.0, 2.0), (0.5, 0.3), (2.0, 1.0)]:
        a.update(*pair)
    b = EmaBalance()
    b.load_state_dict(a.state_dict())
    assert b.update(0.7, 0.9) == a.update(0.7, 0.9)


def test_fixed_lambda():
    f = FixedBalance(0.1)
    assert f.update(5.0, 1.0) == 0.1 and f.lam == 0.1


def test_lambda_carries_no_gradient():
    sft = torch.tensor(2.0, requires_grad=True)
    kl = torch.tensor(4.0, requires_grad=True)
    b = EmaBalance()
    lam = b.update(float(sft.detach()), float(kl.detach()))
    loss = combine(sft, kl, lam)
    loss.backward()
    assert sft.grad.item() == pytest.approx(1.0)  # d/dL_SFT: lambda is not a function of it
    assert kl.grad.item() == pytest.approx(lam)
    assert isinstance(lam, float)

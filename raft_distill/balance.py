"""Adaptive balancing of L_SFT and L_KL (METHOD.md stage 2, step 5).

    m_k <- beta * m_k + (1 - beta) * L_k          k in {SFT, KL}
    m^_k = m_k / (1 - beta^s)                     s = step, from 1 (bias correction)
    lambda = m^_SFT / (m^_KL + eps)               a constant for the backward pass
    L = L_SFT + lambda * L_KL

The state is plain floats so it can be written to a checkpoint and resumed exactly. The
caller passes the loss values of the whole optimizer step (all micro-batches, all
processes), so lambda does not depend on how the step was split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EmaBalance:
    """Bias-corrected EMA of both losses and the lambda they give."""

    beta: float = 0.9
    eps: float = 1e-8
    m_sft: float = 0.0
    m_kl: float = 0.0
    step: int = 0

    def update(self, loss_sft: float, loss_kl: float) -> float:
        """Fold in one step's full-step losses; return lambda for this step."""
        self.step += 1
        self.m_sft = self.beta * self.m_sft + (1.0 - self.beta) * float(loss_sft)
        self.m_kl = self.beta * self.m_kl + (1.0 - self.beta) * float(loss_kl)
        return self.lam

    @property
    def lam(self) -> float:
        if self.step == 0:
            return 1.0
        correction = 1.0 - self.beta**self.step
        return (self.m_sft / correction) / (self.m_kl / correction + self.eps)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class FixedBalance:
    """A fixed lambda (the paper's ablation with 0.1 and 1.0)."""

    value: float
    step: int = 0

    def update(self, loss_sft: float, loss_kl: float) -> float:
        self.step += 1
        return self.value

    @property
    def lam(self) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def combine(loss_sft: Any, loss_kl: Any, lam: float) -> Any:
    """L = L_SFT + lambda * L_KL with lambda a plain float (it carries no gradient)."""
    return loss_sft + float(lam) * loss_kl

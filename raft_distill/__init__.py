"""RAFT stage 2: answer-conditioned on-policy distillation (`raft-distill fit`)."""

from raft_distill.errors import DistillError

__all__ = ["DistillError"]

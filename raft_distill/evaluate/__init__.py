"""Evaluation of base and fine-tuned models (`raft-distill eval`): domain accuracy, general
retention and instruction following (IFEval-style), as METHOD.md's "What the paper
measured" compares them."""

from raft_distill.evaluate.config import EvalConfig, load_eval_config
from raft_distill.evaluate.run import evaluate

__all__ = ["EvalConfig", "evaluate", "load_eval_config"]

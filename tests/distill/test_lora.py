"""train.lora on the tiny Llama: the teacher is the base with adapters off, the saved
models load, resume is exact, unsupported combinations are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from raft_distill import teacher
from raft_distill.config import config_from_dict
from raft_distill.errors import DistillError
from raft_distill.step import teacher_scores
from raft_distill.train import Trainer, fit
from tests.distill.helpers import run_fit_cli, tiny_config

pytest.importorskip("peft")

LORA = {"r": 4, "alpha": 8, "target_modules": "all-linear"}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_teacher_is_the_base_with_adapters_off_and_saved_models_load(
    tiny_model_dir, tiny_dataset, tmp_path
):
    """After LoRA steps that moved the student's logits, the teacher (adapters off) still
    scores exactly as a separately loaded original model; final/ is the merged model
    (transformers loads it, same logits as base + adapters), final/adapter the adapters."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    raw = tiny_config(
        tiny_model_dir,
        tiny_dataset,
        out,
        train={"max_steps": 3, "lr": 1e-2, "lora": LORA, "gradient_checkpointing": True},
    )
    trainer = Trainer(config_from_dict(raw))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    assert trainer.parts.teacher_model is None  # one copy of the base in memory
    trained = {n for n, p in trainer.parts.model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n for n in trained)
    assert {id(p) for g in trainer.parts.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in trainer.parts.model.parameters() if p.requires_grad
    }

    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 17, 300, 4000, 22, 9, 811, 2]])
    student = trainer.parts.peft
    student.eval()
    assert not torch.allclose(_logits(student, ids), _logits(original, ids), atol=1e-3)
    batch = trainer.parts.data.train[:3]
    z = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    ours = teacher_scores(trainer.parts, batch, z)
    packed = teacher.pack([e.teacher_ids for e in batch], z, trainer.parts.pad_id)
    theirs = teacher.score(original, packed, 16, 32, torch.device("cpu"))
    assert torch.equal(ours.topk_ids, theirs.topk_ids)
    assert torch.equal(ours.topk_values, theirs.topk_values)
    assert torch.equal(ours.logsumexp, theirs.logsumexp)
    assert trainer.parts.peft.training is False  # adapters_off restored the mode it found

    final = result.final_model
    assert (final / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    with_adapters = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        final / "adapter",
    )
    torch.testing.assert_close(
        _logits(merged, ids), _logits(with_adapters, ids), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(_logits(merged, ids), _logits(student, ids), atol=1e-5, rtol=1e-5)
    assert not any("lora" in k for k in load_file(str(final / "model.safetensors")))


def test_lora_resume_equals_uninterrupted_run(tiny_model_dir, tiny_dataset, tmp_path):
    """Adapter dropout on, adapters-only saves: same losses and adapter weights."""
    lora = {**LORA, "dropout": 0.1, "merge_on_save": False}

    def cfg(out: Path, steps: int):
        train = {"max_steps": steps, "lr": 1e-2, "checkpoint_every": 2, "lora": lora}
        return config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, out, train=train))

    full, part = tmp_path / "full", tmp_path / "part"
    fit(cfg(full, 4))
    fit(cfg(part, 2))
    fit(cfg(part, 4), resume=True)
    a, b = _metrics(full), _metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss_sft", "loss_kl", "lambda", "trajectory_tokens", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    wa = load_file(str(full / "final" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(part / "final" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
    assert not (full / "final" / "model.safetensors").exists()  # merge_on_save off


def test_lora_two_processes_match_one(tiny_model_dir, tiny_dataset, tmp_path):
    """torchrun, 2 gloo processes with DDP: the same losses and adapters as 1 process with 2
    micro-batches (greedy rollouts, so both score the same trajectories)."""
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        raw = tiny_config(
            tiny_model_dir,
            tiny_dataset,
            out,
            rollout={"temperature": 0.0, "max_new_tokens": 6},
            train={
                "max_steps": 2,
                "lr": 1e-2,
                "adam_eps": 1e-3,
                "gradient_accumulation_steps": 2 // nproc,
                "report_to": [],
                "lora": {**LORA, "merge_on_save": False},
                # both runs on the same passes (auto: 2 processes would take the joint pass,
                # 1 process with 2 micro-batches the separate ones, which agree to rounding
                # that this near-zero KL amplifies past 1e-4: tests/distill/test_step_joint.py)
                "student_pass": "separate",
            },
        )
        path = tmp_path / f"c{nproc}.yaml"
        path.write_text(yaml.safe_dump(raw))
        proc = run_fit_cli(["fit", str(path)], nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[nproc] = out
    for ra, rb in zip(_metrics(outs[1]), _metrics(outs[2]), strict=True):
        for key in ("loss", "loss_sft", "loss_kl", "lambda", "trajectory_tokens"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
    assert json.loads((outs[2] / "summary.json").read_text())["distributed"] == "MULTI_CPU"
    wa, wb = (load_file(str(o / "final/adapter/adapter_model.safetensors")) for o in outs.values())
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"train": {"lora": LORA, "fsdp": True}}, "train.lora with train.fsdp"),
        ({"train": {"lora": {"target_modules": ["lm_head", "q_proj"]}}}, "lm_head"),
        ({"train": {"lora": {"target_modules": ["no_such_layer"]}}}, "target_modules"),
    ],
)
def test_unsupported_lora_settings_are_refused(
    sections, match, tiny_model_dir, tiny_dataset, tmp_path
):
    raw = tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "out")
    for name, values in sections.items():
        raw[name].update(values)
    with pytest.raises(DistillError, match=match):
        Trainer(config_from_dict(raw))


def test_lora_keys_are_checked():
    with pytest.raises(DistillError, match="train.lora.rank"):
        config_from_dict({"data": {"path": "x"}, "train": {"lora": {"rank": 8}}})


def test_lora_checkpoint_state_holds_the_adapters_only(tiny_model_dir, tiny_dataset, tmp_path):
    """A checkpoint's state/ (what --resume reads) keeps the trained adapters, not a second
    copy of the frozen base weights: the base is reloaded from the model on resume. Resume
    from it is exact (test_lora_resume_equals_uninterrupted_run)."""
    out = tmp_path / "run"
    train = {"max_steps": 2, "checkpoint_every": 1, "lora": LORA}
    fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, out, train=train)))
    state = out / "checkpoints" / "step-000001" / "state"
    keys = load_file(str(state / "model.safetensors")).keys()
    assert keys and all(".lora_" in k for k in keys), sorted(keys)[:5]

"""train.py on a tiny random Llama: steps run, loss falls, resume is exact, DDP agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from raft_distill import checkpoints
from raft_distill.config import config_from_dict
from raft_distill.errors import DistillError
from raft_distill.train import Trainer, fit
from tests.distill.helpers import run_fit_cli, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same_weights(a: Path, b: Path, atol: float = 0.0) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(
        torch.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa
    )


def test_raft_steps_write_metrics_plots_and_a_loadable_model(
    tiny_model_dir, tiny_dataset, tmp_path
):
    out = tmp_path / "run"
    raw = tiny_config(
        tiny_model_dir,
        tiny_dataset,
        out,
        data={"eval_fraction": 0.3},
        train={"max_steps": 2, "checkpoint_every": 1, "eval_every": 1},
    )
    result = fit(config_from_dict(raw))
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss_sft", "loss_kl", "lambda", "ce_kl_ratio", "topk_mass", "tokens_per_s"):
            assert r[key] is not None and r[key] == r[key], key
        assert r["peak_memory_mb"] > 0 and r["trajectory_tokens"] > 0
    assert rows[0]["ce_kl_ratio"] == pytest.approx(1.0, rel=1e-4)  # step 1: lambda = L_SFT/L_KL
    assert (out / "losses.png").stat().st_size > 0 and (out / "lambda_ratio.png").exists()
    assert (out / "checkpoints" / "step-000001" / "trainer_state.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for folder in (result.final_model, out / "checkpoints" / "step-000001" / "model"):
        model = AutoModelForCausalLM.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
        assert model.config.vocab_size == 49152
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["final_lambda"] == rows[-1]["lambda"]
    assert summary["train_rows"] + summary["eval_rows"] == 8
    if summary["eval_rows"]:
        assert summary["eval_loss_sft"] > 0 and rows[0]["eval_loss_sft"] > 0


def test_sft_loss_falls_on_a_tiny_overfit_set(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "sft"
    raw = tiny_config(
        tiny_model_dir,
        tiny_dataset,
        out,
        loss={"mode": "sft"},
        train={"max_steps": 12, "lr": 1e-2, "batch_size": 8, "max_grad_norm": None},
    )
    fit(config_from_dict(raw))
    losses = [r["loss_sft"] for r in _metrics(out)]
    assert losses[-1] < 0.7 * losses[0]


def test_raft_high_lr_lowers_sft_loss(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "raft"
    raw = tiny_config(
        tiny_model_dir, tiny_dataset, out, train={"max_steps": 8, "lr": 1e-2, "batch_size": 8}
    )
    fit(config_from_dict(raw))
    rows = _metrics(out)
    assert rows[-1]["loss_sft"] < rows[0]["loss_sft"]
    assert all(r["lambda"] > 0 for r in rows)


def test_resume_equals_uninterrupted_run(tiny_model_dir, tiny_dataset, tmp_path):
    full = tmp_path / "full"
    fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, full, train={"max_steps": 4})))
    part = tmp_path / "part"
    fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, part, train={"max_steps": 2})))
    with pytest.raises(DistillError, match="--resume"):
        fit(
            config_from_dict(
                tiny_config(tiny_model_dir, tiny_dataset, part, train={"max_steps": 4})
            )
        )
    fit(
        config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, part, train={"max_steps": 4})),
        resume=True,
    )
    a, b = _metrics(full), _metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss_sft", "loss_kl", "lambda", "trajectory_tokens", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    assert _same_weights(full / "final", part / "final", atol=1e-6)
    with pytest.raises(DistillError, match="differs"):
        changed = tiny_config(tiny_model_dir, tiny_dataset, part, loss={"top_k": 8})
        fit(config_from_dict(changed), resume=True)


def test_checkpoints_hold_each_weight_once_and_keep_the_newest(
    tiny_model_dir, tiny_dataset, tmp_path
):
    """Disk: state/ holds no second copy of the weights (model/ has them), final/ links the
    last checkpoint's files instead of copying them, train.checkpoint_limit prunes the oldest."""
    out = tmp_path / "run"
    train = {"max_steps": 3, "checkpoint_every": 1, "checkpoint_limit": 2}
    fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, out, train=train)))
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000003"]
    last = out / "checkpoints" / "step-000003"
    assert not list((last / "state").glob("*.safetensors")), "weights saved twice"
    assert (last / "model" / "model.safetensors").exists()
    final = out / "final" / "model.safetensors"
    assert final.stat().st_ino == (last / "model" / "model.safetensors").stat().st_ino
    (last / "model" / "model.safetensors").unlink()  # --resume reads the weights from model/
    train["max_steps"] = 4
    with pytest.raises(DistillError, match="no weights for"):
        fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, out, train=train)), resume=True)


def test_a_checkpoint_with_weights_in_state_still_resumes(
    tiny_model_dir, tiny_dataset, tmp_path, monkeypatch
):
    """Checkpoints written before model/ became the only copy (weights in state/) resume
    exactly, from state/: model/'s weights are deleted to prove where they come from."""
    full = tmp_path / "full"
    fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, full, train={"max_steps": 3})))
    part = tmp_path / "part"
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "weights_in_model_folder_only", lambda run: None)  # the old layout
        fit(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, part, train={"max_steps": 2})))
    ckpt = part / "checkpoints" / "step-000002"
    assert (ckpt / "state" / "model.safetensors").exists()
    (ckpt / "model" / "model.safetensors").unlink()
    raw = tiny_config(tiny_model_dir, tiny_dataset, part, train={"max_steps": 3})
    fit(config_from_dict(raw), resume=True)
    assert _same_weights(full / "final", part / "final", atol=1e-6)


@pytest.mark.parametrize("mode", ["raft", "on-policy", "sft"])
def test_gradient_accumulation_is_invariant(
    tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path, mode
):
    """One step over 4 sequences as 1x4, 2x2 and 4x1 micro-batches: same loss and weights.

    A different random teacher keeps the KL (and its gradient) well above float noise.
    """
    outs = []
    for accum in (1, 2, 4):
        out = tmp_path / f"acc{accum}"
        raw = tiny_config(
            tiny_model_dir,
            tiny_dataset,
            out,
            model={"teacher": str(tiny_teacher_dir)},
            loss={"mode": mode},
            train={
                "max_steps": 1,
                "gradient_accumulation_steps": accum,
                "lr": 1e-2,
                "adam_eps": 1e-3,  # keeps Adam from turning float noise in ~0 grads into +-lr
            },
        )
        fit(config_from_dict(raw))
        outs.append(out)
    a = _metrics(outs[0])[0]
    for other in outs[1:]:
        b = _metrics(other)[0]
        for key in ("loss", "loss_sft", "loss_kl", "lambda", "grad_norm"):
            if a[key] is None:
                assert b[key] is None
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-4), key
        assert _same_weights(outs[0] / "final", other / "final", atol=1e-5)


def test_bad_inputs_are_clear_errors(tiny_model_dir, tmp_path):
    raw = tiny_config(tiny_model_dir, tmp_path / "nope", tmp_path / "o")
    with pytest.raises(DistillError, match="does not exist"):
        fit(config_from_dict(raw))
    raw = tiny_config(
        tiny_model_dir,
        tmp_path / "nope",
        tmp_path / "o",
        train={"batch_size": 3, "gradient_accumulation_steps": 2},
    )
    with pytest.raises(DistillError, match="not divisible"):
        fit(config_from_dict(raw))


_cli = run_fit_cli  # one launcher for every stage-2 CLI test (tests/distill/helpers.py)


def test_cli_reports_errors_without_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": str(tmp_path / "missing")}, "loss": {"k": 1}}))
    proc = _cli(["fit", str(path)])
    assert proc.returncode == 2
    assert "unknown key 'loss.k'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_one(sharding, tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path):
    """torchrun with 2 gloo processes gives the same losses/weights as 1 on the same batch.

    raft mode (both loss terms and the EMA lambda), 2 micro-batches per process (so the
    skipped gradient sync is exercised). DDP replicates the student; FSDP shards it over
    the 2 processes (gathered for the rollouts and the saved model). Rollouts are greedy
    so both runs score the same trajectories (sampling seeds are per process, so sampled
    z would differ by design).
    """
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        raw = tiny_config(
            tiny_model_dir,
            tiny_dataset,
            out,
            model={"teacher": str(tiny_teacher_dir)},
            loss={"mode": "raft"},
            rollout={"temperature": 0.0, "max_new_tokens": 6},
            train={
                "max_steps": 2,
                "lr": 1e-2,
                "adam_eps": 1e-3,
                "gradient_accumulation_steps": 2 // nproc,
                "fsdp": sharding == "fsdp" and nproc == 2,
            },
        )
        path = tmp_path / f"c{nproc}.yaml"
        path.write_text(yaml.safe_dump(raw))
        proc = _cli(["fit", str(path)], nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[nproc] = out
    a, b = _metrics(outs[1]), _metrics(outs[2])
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "loss_sft", "loss_kl", "lambda", "trajectory_tokens"):
            if ra[key] is None:
                assert rb[key] is None
            else:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
    summary = json.loads((outs[2] / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["distributed"] == ("FSDP" if sharding == "fsdp" else "MULTI_CPU")
    assert _same_weights(outs[1] / "final", outs[2] / "final", atol=1e-5)


def test_fsdp_resume_equals_uninterrupted_run(tiny_model_dir, tiny_dataset, tmp_path):
    """2 processes, FSDP: stop after 2 of 3 steps, resume from the sharded checkpoint."""

    def run(out: Path, steps: int, resume: bool = False) -> None:
        raw = tiny_config(
            tiny_model_dir,
            tiny_dataset,
            out,
            rollout={"temperature": 0.0, "max_new_tokens": 6},
            train={"max_steps": steps, "lr": 1e-2, "fsdp": True},
        )
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(raw))
        proc = _cli(["fit", str(path), *(["--resume"] if resume else [])], nproc=2)
        assert proc.returncode == 0, proc.stderr[-3000:]

    full, part = tmp_path / "full", tmp_path / "part"
    run(full, 3)
    run(part, 2)
    assert (part / "checkpoints" / "step-000002" / "fsdp").is_dir()
    run(part, 3, resume=True)
    a, b = _metrics(full), _metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss_sft", "loss_kl", "lambda", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-9), (ra["step"], key)
    assert _same_weights(full / "final", part / "final", atol=1e-6)


def test_fsdp_needs_processes(tiny_model_dir, tiny_dataset, tmp_path):
    raw = tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "out", train={"fsdp": True})
    with pytest.raises(DistillError, match="train.fsdp shards the student over processes"):
        fit(config_from_dict(raw))


def test_bf16_autocast_and_gradient_checkpointing_run(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "gc"
    raw = tiny_config(
        tiny_model_dir,
        tiny_dataset,
        out,
        loss={"mode": "raft", "lambda": 0.5},
        train={"max_steps": 1, "bf16": True, "gradient_checkpointing": True},
    )
    result = fit(config_from_dict(raw))
    row = _metrics(out)[0]
    assert row["lambda"] == 0.5 and row["loss_kl"] >= 0 and row["loss_sft"] > 0
    assert result.summary["bf16"] is True


def test_teacher_with_another_vocabulary_is_refused(
    tiny_model_dir, tiny_teacher_dir, tiny_dataset, tmp_path
):
    import shutil

    from transformers import AutoTokenizer

    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_teacher_dir, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<not-in-the-student-vocab>"])
    tok.save_pretrained(other)
    raw = tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "o", model={"teacher": str(other)})
    with pytest.raises(DistillError, match="different tokenizer vocabularies"):
        fit(config_from_dict(raw))


def test_fresh_run_starts_a_fresh_metrics_file(tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 99, "stale": true}\n')
    raw = tiny_config(tiny_model_dir, tiny_dataset, out, train={"max_steps": 1, "checkpoint_every": 0})
    fit(config_from_dict(raw))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "stale" not in lines[0]


def test_step_phases_are_named_in_a_profile(tiny_model_dir, tiny_dataset, tmp_path):
    """benchmarks/distill_scale.py --profile splits a step by phase: the trainer marks its
    rollout, teacher, student and optimizer phases as profiler ranges."""
    trainer = Trainer(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "r")))
    try:
        trainer.model.train()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainer.train_step(0)
        names = {event.key for event in prof.key_averages()}
        phases = {f"raft_distill.{p}" for p in ("rollout", "teacher", "student", "optimizer")}
        assert phases <= names, sorted(n for n in names if n.startswith("raft_distill"))
    finally:
        trainer.close()

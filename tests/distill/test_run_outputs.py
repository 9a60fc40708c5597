"""What a fit leaves for a person to read after the fact: the run's log file (every
decision once, no silent fallback) and the TensorBoard events beside metrics.jsonl."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from raft_distill import run_setup
from raft_distill.config import config_from_dict
from raft_distill.errors import DistillError
from raft_distill.train import fit
from tests.distill.helpers import QA, make_record, tiny_config, write_dataset

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def _log_text(out: Path) -> str:
    logs = sorted((out / "logs").glob("fit-*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs the tensorboard package (dev extra)")
def test_fit_logs_its_decisions_and_writes_tensorboard_scalars(
    tiny_model_dir, tmp_path, monkeypatch
):
    records = [make_record(q, a) for q, a in QA]
    records[0] = make_record(*QA[0], decision="fallback", final_source="gold")
    data = write_dataset(tmp_path / "fused", records)
    out = tmp_path / "run"
    raw = tiny_config(
        tiny_model_dir,
        data,
        out,
        data={"use_decisions": ["accepted"]},
        train={"max_steps": 2, "bf16": True},
    )
    # a device without bf16 autocast: the run goes on in float32 and says so
    monkeypatch.setattr(run_setup, "autocast_supported", lambda device: False)
    result = fit(config_from_dict(raw))
    assert result.summary["bf16"] is False

    text = _log_text(out)
    assert "WARNING" in text and "train.bf16 is on but" in text and "float32" in text
    assert "7 train, 0 eval, 1 skipped {'decision_fallback': 1}" in text
    assert f"(id {records[0].id}) skipped: decision fallback" in text  # DEBUG, per row
    assert "teacher context: y^ and x, teacher.format chat" in text
    assert "rollouts: transformers engine" in text and "2 optimizer steps" in text
    assert "trackers: tensorboard" in text and "step 2: loss" in text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "raft-distill"), size_guidance={"scalars": 0})
    events.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "loss_sft", "loss_kl", "lambda", "grad_norm", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2], key
        for s, row in zip(scalars, rows, strict=True):
            assert s.value == pytest.approx(row[key], rel=1e-6), key  # float32 in the event


def test_report_to_none_writes_no_events_and_a_missing_tracker_is_an_error(
    tiny_model_dir, tiny_dataset, tmp_path
):
    out = tmp_path / "plain"
    raw = tiny_config(
        tiny_model_dir, tiny_dataset, out, loss={"mode": "sft"}, train={"max_steps": 1, "report_to": []}
    )
    fit(config_from_dict(raw))
    assert not (out / "tensorboard").exists()
    assert "trackers: none" in _log_text(out)
    if importlib.util.find_spec("wandb") is None:
        raw = tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "w", train={"report_to": ["wandb"]})
        with pytest.raises(DistillError, match="train.report_to names wandb.*pip install wandb"):
            fit(config_from_dict(raw))
        assert "pip install wandb" in _log_text(tmp_path / "w")  # the error, in the log too

"""A fit run's folder and its checkpoints: layout, save, load, pruning, resume checks.

    <train.output_dir>/
      config.yaml            the run's config (--resume refuses a change beyond RESUMABLE_KEYS)
      metrics.jsonl          one row per step (cut back to the checkpoint on --resume)
      checkpoints/step-NNNNNN/
        state/               accelerate's state: optimizer, scheduler, RNG (LoRA: + adapters)
        fsdp/                with train.fsdp: the sharded model and optimizer
        model/               the HF folder of the weights (the only copy of them)
        trainer_state.json   step, lambda's EMA, skipped rows; written last = complete
      final/                 the last checkpoint's model/, hard-linked (no second copy)

A checkpoint is complete once its trainer_state.json exists: a kill at any point leaves the
newest complete one to resume from (tests/distill/test_kill_resume.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from raft_distill import lora, sharding
from raft_distill.config import FitConfig
from raft_distill.errors import DistillError
from raft_distill.run_setup import FitRun

log = logging.getLogger(__name__)

# Keys that may change on --resume without changing what the run means.
RESUMABLE_KEYS = {
    "max_steps",
    "epochs",
    "checkpoint_every",
    "checkpoint_limit",
    "eval_every",
    "progress",
    "report_to",
}


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def step_folder(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints (their trainer_state.json is written last), oldest first."""
    found = []
    for path in (output_dir / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", path.name)
        if m and (path / "trainer_state.json").exists():
            found.append((int(m.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (train.checkpoint_limit); returns
    the deleted folders. trainer_state.json goes first, so a crash mid-delete leaves a folder
    that `latest_checkpoint` already ignores."""
    old = complete_checkpoints(output_dir)[:-keep] if keep > 0 else []
    for path in old:
        (path / "trainer_state.json").unlink()
        shutil.rmtree(path)
        log.info("checkpoint_limit %d: deleted %s", keep, path)
    return old


def _comparable(cfg: FitConfig) -> dict[str, Any]:
    raw = cfg.model_dump(mode="json", by_alias=True)
    for key in RESUMABLE_KEYS:
        raw["train"].pop(key, None)
    return raw


def prepare_output_dir(run: FitRun, out: Path, resume: bool) -> None:
    """Check the folder fits a fresh run or a resume, then write config.yaml (main process);
    a fresh run starts a fresh metrics.jsonl."""
    if run.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "config.yaml"
        metrics = out / "metrics.jsonl"
        if resume:
            _check_resumable(run.cfg, out, saved)
        elif latest_checkpoint(out) is not None:
            raise DistillError(
                f"{out} already holds checkpoints; pass --resume or choose another "
                "train.output_dir"
            )
        elif metrics.exists():
            # a fresh run starts a fresh metrics file (a resumed one is cut at its checkpoint)
            metrics.unlink()
            log.info("fresh run: the old %s removed", metrics)
        atomic_write_text(saved, yaml.safe_dump(run.cfg.model_dump(mode="json", by_alias=True)))
    run.accelerator.wait_for_everyone()


def _check_resumable(cfg: FitConfig, out: Path, saved: Path) -> None:
    if latest_checkpoint(out) is None:
        raise DistillError(f"--resume: no complete checkpoint under {out}/checkpoints")
    old = yaml.safe_load(saved.read_text()) if saved.exists() else None
    if old is None:
        return
    for key in RESUMABLE_KEYS:
        old.get("train", {}).pop(key, None)
    if old != _comparable(cfg):
        raise DistillError(
            f"--resume: {saved} differs from this config beyond "
            f"{sorted(RESUMABLE_KEYS)}; use a new train.output_dir"
        )


def register_state_layout(run: FitRun) -> None:
    """What state/ holds besides the optimizer, scheduler and RNG: LoRA's adapters only;
    with full fine-tuning nothing of the model (model/ holds the weights); FSDP its own."""
    if run.peft is not None:
        save_adapters_only(run)
    elif not run.cfg.train.fsdp:
        weights_in_model_folder_only(run)


def weights_in_model_folder_only(run: FitRun) -> None:
    """Full fine-tuning: a checkpoint's weights live once, in its model/ folder (the HF
    folder users load); state/ keeps the optimizer, scheduler and RNG. Saving them in
    state/ too doubled every checkpoint (a 70B model in fp32: 280 GB more each)."""

    def drop_weights(models: Any, weights: list[dict[str, Any]], output_dir: str) -> None:
        weights.clear()

    def load_from_model_folder(models: list[Any], input_dir: str) -> None:
        state = Path(input_dir)
        if any(state.glob("model*.safetensors")) or any(state.glob("pytorch_model*.bin")):
            return  # a checkpoint from before this layout: accelerate loads state/
        _load_model_folder(run.student_lm(), state.parent / "model")
        models.clear()

    run.accelerator.register_save_state_pre_hook(drop_weights)
    run.accelerator.register_load_state_pre_hook(load_from_model_folder)


def _load_model_folder(lm: Any, folder: Path) -> None:
    """The student's weights from a checkpoint's model/, refusing one that lacks any."""
    from accelerate.utils import load_checkpoint_in_model
    from safetensors import safe_open

    saved: set[str] = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            saved.update(f.keys())
    # a tied head is one parameter under two names: named_parameters() lists it once
    missing = sorted({n for n, _ in lm.named_parameters()} - saved)
    if missing:
        raise DistillError(
            f"--resume: {folder} has no weights for {len(missing)} parameter(s) "
            f"({', '.join(missing[:3])}); that checkpoint is incomplete or from another "
            "model: delete it to resume from the one before"
        )
    load_checkpoint_in_model(lm, str(folder), strict=False)


def save_adapters_only(run: FitRun) -> None:
    """LoRA: a checkpoint's state/ keeps the trained adapters, not the frozen base
    weights (they never change; --resume reloads them from the model, then the
    adapters from state/ with strict=False)."""
    trained = {n for n, p in run.model.named_parameters() if p.requires_grad}

    def keep_trained(models: Any, weights: list[dict[str, Any]], output_dir: str) -> None:
        for state in weights:
            for key in [k for k in state if k not in trained]:
                del state[key]

    run.accelerator.register_save_state_pre_hook(keep_trained)


def save_training_state(run: FitRun, folder: Path) -> None:
    """state/ (scheduler, RNG, optimizer under DDP) and, with FSDP, the sharded fsdp/."""
    run.accelerator.save_state(str(folder / "state"))
    if run.cfg.train.fsdp:
        sharding.save_sharded(folder / "fsdp", run.model, run.optimizer)


def save_model(run: FitRun, folder: Path) -> None:
    """A plain HF folder (safetensors + config + tokenizer) that transformers loads; with
    train.lora, the merged model there (unless merge_on_save is off) and adapter/."""
    unwrapped = run.student_lm()
    if run.peft is not None:
        if run.accelerator.is_main_process:
            unwrapped.config.use_cache = True
            lora.save(run.peft, folder, merged=bool(run.cfg.train.lora.merge_on_save))  # type: ignore[union-attr]
            unwrapped.config.use_cache = False
            run.tokenizer.save_pretrained(folder)
        return
    state = None
    if run.cfg.train.fsdp:
        full = sharding.full_state_dict(run.model)  # every process takes part
        # a tied head appears under both names in a full state dict: keep one, as
        # save_pretrained does for an unsharded model
        tied = {n for n, _ in unwrapped.named_parameters(remove_duplicate=False)}
        tied -= {n for n, _ in unwrapped.named_parameters()}
        state = {k.removeprefix("lm."): v for k, v in full.items()}
        state = {k: v for k, v in state.items() if k not in tied}
    if run.accelerator.is_main_process:
        unwrapped.config.use_cache = True
        unwrapped.save_pretrained(folder, state_dict=state, safe_serialization=True)
        unwrapped.config.use_cache = False
        run.tokenizer.save_pretrained(folder)


def mark_complete(run: FitRun, folder: Path, step: int, output_dir: Path) -> None:
    """trainer_state.json, written last (the checkpoint is complete), then the pruning."""
    if run.accelerator.is_main_process:
        state = {
            "step": step,
            "total_steps": run.total_steps,
            "balance": run.balance.state_dict(),
            "skipped_rows": dict(run.data.skipped),
        }
        atomic_write_text(folder / "trainer_state.json", json.dumps(state, indent=2))
        if run.cfg.train.checkpoint_limit:
            prune_checkpoints(output_dir, run.cfg.train.checkpoint_limit)
    run.accelerator.wait_for_everyone()
    log.debug("checkpoint %s", folder)


def load_checkpoint(run: FitRun, output_dir: Path) -> int:
    """The newest complete checkpoint into the run; returns the step it was taken after."""
    ckpt = latest_checkpoint(output_dir)
    if ckpt is None:
        raise DistillError(f"--resume: no complete checkpoint under {output_dir}/checkpoints")
    # LoRA: state/ holds the adapters only (`save_adapters_only`)
    run.accelerator.load_state(str(ckpt / "state"), strict=run.peft is None)
    if run.cfg.train.fsdp:
        sharding.load_sharded(ckpt / "fsdp", run.model, run.optimizer)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    run.balance.load_state_dict(state["balance"])
    step = int(state["step"])
    log.info("resumed from %s: step %d of %d", ckpt, step, run.total_steps)
    return step


def cut_metrics(metrics_path: Path, step: int) -> None:
    """metrics.jsonl without the rows after `step` (done before the kill, redone now)."""
    if not metrics_path.exists():
        return
    lines = metrics_path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))
    if len(kept) < len(lines):
        log.info("%s: %d rows after the checkpoint dropped", metrics_path, len(lines) - len(kept))


def _link_or_copy(src: str, dst: str) -> str:
    """final/ shares the last checkpoint's files (a hard link: no second copy of the weights;
    every save writes new files, never into old ones); a copy where links are not allowed."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def write_final(checkpoint: Path, final: Path) -> None:
    """final/ = the checkpoint's model/, afresh (main process)."""
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(checkpoint / "model", final, copy_function=_link_or_copy)

"""Stage-2 test helpers: small fused datasets, a config for the tiny model, a second
tokenizer family. Imported as `from tests.distill.helpers import ...`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from schemas import RefinedRecord, row_id, write_records

QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 2 + 3?", "2 + 3 equals 5."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What do bees make?", "Bees make honey."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
]


REPO = Path(__file__).resolve().parents[2]


def make_record(question: str, answer: str, **overrides: Any) -> RefinedRecord:
    fields: dict[str, Any] = dict(
        id=row_id("general", question, answer),
        question=question,
        gold_answer=answer,
        domain="general",
        source_file="qa.jsonl",
        source_row=0,
        decision="accepted",
        reason="passed",
        final_answer=answer,
        final_source="fusion",
        teacher_context_tokens=40,
        over_length=False,
    )
    fields.update(overrides)
    return RefinedRecord(**fields)


def write_dataset(folder: Path, records: list[RefinedRecord]) -> Path:
    write_records(folder / "data" / "train-00000.parquet", records, RefinedRecord)
    return folder


def tiny_config(
    model_dir: Path, data_dir: Path, out_dir: Path, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A raw config dict for the tiny model: 4 sequences/step, short rollouts, K=16."""
    raw: dict[str, Any] = {
        "data": {"path": str(data_dir)},
        "model": {"student": str(model_dir)},
        "rollout": {"max_new_tokens": 8, "temperature": 1.0},
        "loss": {"mode": "raft", "top_k": 16, "temperature": 1.5, "logit_chunk_size": 32},
        "train": {
            "lr": 1e-3,
            "batch_size": 4,
            "max_steps": 2,
            "lr_scheduler": "constant",
            "bf16": False,
            "output_dir": str(out_dir),
            "progress": False,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def make_metaspace_tokenizer() -> Any:
    """A sentencepiece-like tokenizer (BPE on Metaspace "▁" words, BOS added to plain text,
    its own chat template), trained here on the QA rows: a second tokenizer family for the
    tests that must hold for any tokenizer. No network."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from schemas import TEACHER_TEMPLATE

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = [TEACHER_TEMPLATE.format(reference=a, question=q) + " " + a for q, a in QA]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"],
        initial_alphabet=list(string.printable) + ["▁"],
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    return fast


def run_fit_cli(
    args: list[str], nproc: int = 1, timeout: int = 240
) -> subprocess.CompletedProcess[str]:
    """`python -m raft_distill ...`, under torchrun with `nproc` gloo processes when > 1, in
    its own session so that a hung run and its workers are killed as one group; a timeout
    fails the test with the run's stderr."""
    import pytest

    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "raft_distill", *args]
    if nproc > 1:
        launch = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"]
        cmd = [sys.executable, *launch, *cmd[1:]]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout}s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

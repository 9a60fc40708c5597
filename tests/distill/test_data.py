"""data.py: reading through schemas, clear errors on bad input, split, skips, tokens."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from raft_distill.config import config_from_dict
from raft_distill.data import build_dataset, is_eval, load_rows, step_indices
from raft_distill.errors import DistillError
from schemas import SchemaError
from tests.distill.helpers import QA, make_record, write_dataset


def test_missing_folder_and_empty_folder(tmp_path: Path):
    with pytest.raises(DistillError, match="does not exist"):
        load_rows(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match="no data/\\*.parquet"):
        load_rows(tmp_path / "empty")


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_wrong_schema_version_names_the_file(tiny_dataset: Path):
    shard = tiny_dataset / "data" / "train-00000.parquet"
    table = pq.read_table(shard)
    meta = dict(table.schema.metadata)
    meta[b"raft.schema_version"] = b"2.0"
    _rewrite(shard, table.replace_schema_metadata(meta))
    with pytest.raises(SchemaError, match="train-00000.parquet.*2.0"):
        load_rows(tiny_dataset)


def test_missing_column_names_the_file_and_column(tiny_dataset: Path):
    shard = tiny_dataset / "data" / "train-00000.parquet"
    table = pq.read_table(shard)
    meta = table.schema.metadata
    table = table.drop_columns(["final_answer"]).replace_schema_metadata(meta)
    _rewrite(shard, table)
    with pytest.raises(SchemaError, match="train-00000.parquet.*final_answer"):
        load_rows(tiny_dataset)


def test_unstamped_parquet_is_refused(tmp_path: Path):
    (tmp_path / "d" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "d" / "data" / "train-00000.parquet")
    with pytest.raises(SchemaError, match="no RAFT schema stamp"):
        load_rows(tmp_path / "d")


def _cfg(**loss):
    return config_from_dict({"data": {"path": "x"}, "loss": loss})


def test_build_dataset_tokens_skips_and_split(tmp_path: Path, smollm2_dir: Path):
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    records = [make_record(q, a) for q, a in QA]
    records.append(make_record("Long?", "x", over_length=True, over_length_reason="too long"))
    records.append(make_record("Fallback?", "gold", decision="fallback", final_source="gold"))
    rows, _ = load_rows(write_dataset(tmp_path / "d", records))
    cfg = _cfg()
    ds = build_dataset(rows, tok, cfg.data, cfg.loss, cfg.teacher)
    assert ds.skipped == {"over_length_stage1": 1}
    assert len(ds.train) == len(QA) + 1
    ex = ds.train[0]
    assert ex.target_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.target_ids[:-1]) == QA[0][1]
    assert "<|im_start|>user\n" + QA[0][0] in tok.decode(ex.prompt_ids)
    paper_text = (
        f"Background reference knowledge: {QA[0][1]}\n"
        f"Answer the question based on the reference knowledge: {QA[0][0]}\nAnswer:"
    )
    # default: the paper's text as the user turn of the chat template, then the assistant
    # header, the boundary the student samples z after
    assert tok.decode(ex.teacher_ids) == (
        f"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{paper_text}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(ex.prompt_ids).endswith("<|im_start|>assistant\n")
    # plain: the text as is, ending without the trailing space that left an orphan "Ġ"
    plain = cfg.teacher.model_copy(update={"format": "plain"})
    ds_plain = build_dataset(rows, tok, cfg.data, cfg.loss, plain)
    assert tok.decode(ds_plain.train[0].teacher_ids) == paper_text
    only_accepted = cfg.data.model_copy(update={"use_decisions": ["accepted"]})
    ds2 = build_dataset(rows, tok, only_accepted, cfg.loss, cfg.teacher)
    assert ds2.skipped["decision_fallback"] == 1
    strict = cfg.data.model_copy(update={"on_over_length": "fail"})
    with pytest.raises(DistillError, match="over_length"):
        build_dataset(rows, tok, strict, cfg.loss, cfg.teacher)
    short = cfg.teacher.model_copy(update={"max_context_tokens": 20})
    ds3 = build_dataset(rows, tok, cfg.data, cfg.loss, short)
    assert ds3.skipped["over_length_teacher_context"] == len(rows) - 1 - len(ds3.train) > 0
    onp = _cfg(mode="on-policy")
    ds4 = build_dataset(rows, tok, onp.data, onp.loss, onp.teacher)
    assert ds4.train[0].teacher_ids == ds4.train[0].prompt_ids


def test_split_and_step_order_are_deterministic():
    ids = [f"row{i}" for i in range(2000)]
    held = [i for i in ids if is_eval(i, 0, 0.1)]
    assert 150 < len(held) < 250
    assert held == [i for i in ids if is_eval(i, 0, 0.1)]
    assert not any(is_eval(i, 0, 0.0) for i in ids)
    first = [step_indices(s, 3, 7, seed=1) for s in range(5)]
    assert first == [step_indices(s, 3, 7, seed=1) for s in range(5)]
    flat = [i for s in first for i in s]
    assert sorted(flat[:7]) == list(range(7))  # each epoch is a permutation

"""The leak diagnostic and its ablation (issue 21): at a z position whose teacher top-1
starts a word of the teacher's own context ('reference'), the teacher is about to talk about
the reference it reads. metrics.jsonl counts such positions (`teacher_reference_top1`);
`loss.mask_reference_kl` drops them from the KL."""

from __future__ import annotations

import pytest
import torch

from raft_distill.config import config_from_dict
from raft_distill.loss import reference_weights
from raft_distill.run_setup import reference_token_ids
from raft_distill.train import Trainer
from tests.distill.helpers import make_metaspace_tokenizer, tiny_config


def test_reference_ids_are_the_words_first_tokens_in_every_case_and_spacing(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = reference_token_ids(tok, ["reference"]).tolist()
    texts = sorted(tok.decode([i]) for i in ids)
    assert texts == [" Reference", " reference", "Reference", "reference"]
    assert reference_token_ids(tok, []).numel() == 0
    # sentencepiece-like: ' reference' is ['▁', 'reference'] or one piece; 'Reference' is
    # ['▁', 'R', 'ef', 'erence']: neither the bare space nor 'R' may count as the word
    meta = make_metaspace_tokenizer()
    ids = reference_token_ids(meta, ["reference"]).tolist()
    assert [meta.decode([i]).strip() for i in ids] == ["reference"]


def test_masked_positions_get_zero_weight_and_the_rest_keep_theirs():
    top1 = torch.tensor([5, 7, 9, 7])
    weight = torch.tensor([0.5, 0.5, 0.25, 0.25])
    at, kept = reference_weights(top1, torch.tensor([7]), weight, mask=False)
    assert at.tolist() == [False, True, False, True] and torch.equal(kept, weight)
    at, masked = reference_weights(top1, torch.tensor([7]), weight, mask=True)
    assert masked.tolist() == [0.5, 0.0, 0.25, 0.0]


@pytest.mark.parametrize("student_pass", ["joint", "separate"])
def test_a_step_counts_reference_positions_and_the_mask_drops_them(
    tiny_model_dir, tiny_dataset, tmp_path, student_pass
):
    """Every id a reference id: every position counts (share 1.0, summed over micro-batches
    and processes) and the masked KL is 0; no id: share 0 and the KL unchanged."""
    rows = {}
    for name, every_id, mask in (("plain", False, False), ("all", True, False), ("masked", True, True)):
        raw = tiny_config(
            tiny_model_dir, tiny_dataset, tmp_path / name, loss={"mask_reference_kl": mask},
            train={"max_steps": 1, "student_pass": student_pass},
        )
        trainer = Trainer(config_from_dict(raw))
        try:
            if every_id:
                trainer.parts.reference_ids = torch.arange(trainer.parts.tokenizer.vocab_size + 64)
            trainer.model.train()
            rows[name] = trainer.train_step(0)
        finally:
            trainer.close()
    assert rows["plain"]["teacher_reference_top1"] == 0.0  # the random model never says it
    assert rows["all"]["teacher_reference_top1"] == 1.0
    assert rows["all"]["loss_kl"] == pytest.approx(rows["plain"]["loss_kl"])
    assert rows["plain"]["loss_kl"] > 0 and rows["masked"]["loss_kl"] == 0.0
    assert rows["masked"]["teacher_reference_top1"] == 1.0


def test_the_mask_without_words_is_refused(tiny_dataset, tmp_path):
    raw = tiny_config(tmp_path / "m", tiny_dataset, tmp_path / "o",
                      loss={"mask_reference_kl": True, "reference_words": []})
    with pytest.raises(Exception, match="loss.reference_words, which is empty"):
        config_from_dict(raw)

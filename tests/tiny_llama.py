"""A tiny random-weight Llama that shares SmolLM2's tokenizer and chat template: fast tests
of everything but the model's quality."""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(
    folder: Path, tokenizer_dir: Path, seed: int = 0, head_dim: int | None = None
) -> Path:
    """`head_dim`: None = hidden / heads = 8; vLLM's CPU attention needs 32, 64, 128..."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder

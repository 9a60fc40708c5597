"""Greedy answers from a model: HF `generate` (default) or vLLM's offline engine.

Every prompt is one user turn rendered with the model's own chat template
(`add_generation_prompt=True`) and tokenised once here, so both engines see identical
token ids. Decoding is greedy, so a score depends only on the weights and the prompts.

Each answer comes with its finish reason (`Completion`): "stop" when the model ended it
(an end token), "length" when `max_new_tokens` cut it. A cut answer fails instructions
about its end or its length through the budget, not the model; IFEval reports the share.

vLLM on CPU runs in float32 with `enforce_eager=True` (bf16 eager gave wrong text on
CPU) and spawns worker processes: a script that uses it needs an
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from raft_distill.errors import DistillError
from raft_distill.vllm_engine import cpu_defaults, require_vllm, shutdown


@dataclass(frozen=True)
class Completion:
    """One greedy answer and why it ended: "stop" (an end token) or "length" (the budget)."""

    text: str
    finish_reason: str


class Generator(Protocol):
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]: ...

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[Completion]: ...

    def close(self) -> None: ...


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def load_causal_lm(path: Path, dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder, in eval mode on the GPU if there is one.

    dtype "auto": float32 on CPU, bfloat16 on GPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if _cuda() else "cpu"
    torch_dtype = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }.get(dtype, torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    lm.to(device)  # type: ignore[arg-type]
    lm.eval()
    return lm, tokenizer


def render_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a one-turn chat ending where the assistant starts to answer."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class TransformersGenerator:
    """Batched greedy HF `generate` with left padding; batches are formed by prompt length."""

    def __init__(
        self, path: Path, batch_size: int, dtype: str = "auto", progress: bool = False
    ) -> None:
        self.lm, self.tokenizer = load_causal_lm(path, dtype)
        self.device = self.lm.device
        self.batch_size = batch_size
        self.progress = progress
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        return [c.text for c in self.complete(prompts, max_new_tokens)]

    def stop_ids(self) -> set[int]:
        """The tokens `generate` stops at: the tokenizer's eos and the generation config's."""
        config_eos = getattr(self.lm.generation_config, "eos_token_id", None)
        ids = config_eos if isinstance(config_eos, list) else [config_eos]
        return {int(i) for i in [self.tokenizer.eos_token_id, *ids] if i is not None}

    def _finish(self, row: list[int], stops: set[int]) -> Completion:
        """The answer before the first end token; "length" when there is none (the row ran
        to max_new_tokens: HF pads a row only after its end token)."""
        end = next((k for k, t in enumerate(row) if t in stops), None)
        ids = row if end is None else row[:end]
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True)).strip()
        return Completion(text, "length" if end is None else "stop")

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[Completion]:
        import torch
        from tqdm import tqdm

        encoded = [render_prompt(self.tokenizer, p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[Completion] = [Completion("", "stop")] * len(prompts)
        pad = int(self.tokenizer.pad_token_id)
        stops = self.stop_ids()
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not self.progress)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[j, width - len(encoded[i]) :] = 1
            with torch.inference_mode():
                generated = self.lm.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad,
                )
            for j, row in enumerate(generated[:, width:].tolist()):
                out[rows[j]] = self._finish(row, stops)
            bar.update(len(rows))
        bar.close()
        return out

    def close(self) -> None:
        del self.lm


class VLLMGenerator:
    """vLLM's offline engine, greedy; it schedules its own batches."""

    def __init__(
        self, path: Path, dtype: str = "auto", max_model_len: int = 2048, progress: bool = False
    ) -> None:
        require_vllm("engine", "engine: transformers")
        from transformers import AutoTokenizer
        from vllm import LLM

        cuda = _cuda()
        engine_kwargs: dict[str, Any] = {}
        if not cuda:
            engine_kwargs = cpu_defaults(max_model_len)
            if dtype not in ("auto", "float32"):
                raise DistillError(
                    "dtype: vLLM on CPU gives wrong text in eager bf16/fp16; use float32 "
                    "(or auto) or engine: transformers"
                )
            dtype = "float32"
        self.progress = progress
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.llm = LLM(
            model=str(path),
            dtype=dtype,  # type: ignore[arg-type]
            seed=0,
            max_model_len=max_model_len,
            enforce_eager=not cuda,
            **engine_kwargs,
        )

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        return [c.text for c in self.complete(prompts, max_new_tokens)]

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        requests = [TokensPrompt(prompt_token_ids=render_prompt(self.tokenizer, p)) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=self.progress)
        return [
            Completion(o.outputs[0].text.strip(), str(o.outputs[0].finish_reason or "stop"))
            for o in outputs
        ]

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        shutdown(self.llm)
        del self.llm


def open_generator(
    path: Path,
    engine: str,
    batch_size: int,
    dtype: str = "auto",
    max_model_len: int = 2048,
    progress: bool = False,
) -> Generator:
    """The generator for `engine` ('transformers' or 'vllm') on the model folder `path`.

    `progress`: a tqdm bar (prompts done, rate, ETA) on stderr while generating.
    """
    if engine == "vllm":
        return VLLMGenerator(path, dtype=dtype, max_model_len=max_model_len, progress=progress)
    return TransformersGenerator(path, batch_size=batch_size, dtype=dtype, progress=progress)

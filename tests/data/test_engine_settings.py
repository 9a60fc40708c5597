"""Per-model engine settings (`engines:` in the pipeline YAML): parsing and errors, how each
role's settings are resolved and reach the vLLM constructor, and the manifest record."""

from __future__ import annotations

from pathlib import Path

import pytest

from raft_data.config import InputConfig, PipelineConfig, load_config
from raft_data.engines import config_key, engine_kwargs, resolve_engine, role_settings
from raft_data.errors import RaftDataError

BASE = "name: x\ninput: {path: a.jsonl}\noutput: {dir: o}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + text)
    return path


def test_roles_inherit_backend_and_override_it(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, (
        "backend: {dtype: float32, max_model_len: 2048, tensor_parallel_size: 2}\n"
        "fusion: {judges: [a, b]}\n"
        "engines:\n"
        "  fusion: {tensor_parallel_size: 4, quantization: awq, gpu_memory_utilization: 0.5}\n"
        "  judges: [{dtype: bfloat16}]\n"
        "  embedder: {dtype: bfloat16}\n"
    )))
    original = role_settings(cfg, "original")
    assert (original.dtype, original.max_model_len, original.tensor_parallel_size) == ("float32", 2048, 2)
    fusion = role_settings(cfg, "fusion")
    assert (fusion.tensor_parallel_size, fusion.quantization, fusion.gpu_memory_utilization) == (4, "awq", 0.5)
    assert fusion.max_model_len == 2048  # unset: the backend's
    assert role_settings(cfg, "judge_0").dtype == "bfloat16"
    assert role_settings(cfg, "judge_1").dtype == "float32"  # no entry: the backend's
    assert cfg.engines.embedder.dtype == "bfloat16"


def test_unknown_keys_and_roles_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RaftDataError, match=r"unknown key 'engines.fusion.tensor_parallel'; allowed here: .*tensor_parallel_size"):
        load_config(write(tmp_path, "engines: {fusion: {tensor_parallel: 2}}\n"))
    with pytest.raises(RaftDataError, match=r"unknown key 'engines.judge'; allowed here: original, fusion, judges, embedder"):
        load_config(write(tmp_path, "engines: {judge: {dtype: float32}}\n"))
    with pytest.raises(RaftDataError, match=r"unknown key 'engines.embedder.tensor_parallel_size'; allowed here: dtype"):
        load_config(write(tmp_path, "engines: {embedder: {tensor_parallel_size: 2}}\n"))
    with pytest.raises(RaftDataError, match=r"engines.judges has 2 entries but there is 1 judge"):
        load_config(write(tmp_path, "engines: {judges: [{dtype: float32}, {dtype: float32}]}\n"))
    with pytest.raises(RaftDataError, match=r"key 'engines.original.gpu_memory_utilization'"):
        load_config(write(tmp_path, "engines: {original: {gpu_memory_utilization: 1.5}}\n"))


def test_unset_engines_keep_the_config_hash(tmp_path: Path) -> None:
    """A config without the new keys hashes as before they existed: its builds stay valid."""
    plain = load_config(write(tmp_path, ""))
    dumped = plain.model_dump(mode="json")
    assert "engines" in dumped and dumped["backend"]["quantization"] is None
    set_ = load_config(write(tmp_path, "engines: {original: {dtype: float32}}\n"))
    assert plain.config_hash() != set_.config_hash()
    assert plain.config_hash() == "d1651a8835e7e1a7"  # this config's hash before `engines` existed


def test_resolve_engine_defaults_per_device() -> None:
    cfg = PipelineConfig.model_validate({"name": "x", "input": {"path": "a"}, "output": {"dir": "o"}})
    settings = role_settings(cfg, "original")
    cpu = resolve_engine(settings, cuda=False, vllm=True, env={})
    assert (cpu.engine, cpu.device, cpu.dtype, cpu.enforce_eager, cpu.engine_core) == (
        "vllm", "cpu", "float32", True, "in-process"
    )
    assert cpu.gpu_memory_utilization is None  # not a CPU setting
    gpu = resolve_engine(settings, cuda=True, vllm=True, env={})
    assert (gpu.dtype, gpu.enforce_eager, gpu.engine_core, gpu.gpu_memory_utilization) == (
        "auto", False, "separate process", 0.85
    )
    sep = resolve_engine(settings, cuda=False, vllm=True, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
    assert sep.engine_core == "separate process"
    hf = resolve_engine(settings, cuda=False, vllm=False, env={})
    assert (hf.engine, hf.dtype, hf.engine_core, hf.tensor_parallel_size) == ("transformers", "float32", None, None)


def test_settings_reach_the_vllm_constructor() -> None:
    cfg = PipelineConfig.model_validate({
        "name": "x", "input": {"path": "a"}, "output": {"dir": "o"},
        "backend": {"engine": "vllm"},
        "engines": {"original": {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.4, "max_model_len": 8192,
                                 "quantization": "fp8", "dtype": "bfloat16", "enforce_eager": True}},
    })
    resolved = resolve_engine(role_settings(cfg, "original"), cuda=True, vllm=True, env={})
    kw = engine_kwargs(resolved, "/models/m")
    assert kw == {
        "model": "/models/m", "dtype": "bfloat16", "seed": 0, "max_model_len": 8192, "enforce_eager": True,
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.4, "quantization": "fp8",
    }
    cpu = engine_kwargs(resolve_engine(role_settings(cfg, "fusion"), cuda=False, vllm=True, env={}), "/m")
    assert "gpu_memory_utilization" not in cpu and "quantization" not in cpu
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] == 4096


def test_quantization_needs_vllm() -> None:
    cfg = PipelineConfig.model_validate({
        "name": "x", "input": {"path": "a"}, "output": {"dir": "o"},
        "backend": {"engine": "transformers"}, "engines": {"judges": [{"quantization": "awq"}]},
    })
    with pytest.raises(RaftDataError, match=r"engines.judges\[0\].quantization .* 'awq' needs the vLLM engine"):
        resolve_engine(role_settings(cfg, "judge_0"), cuda=False, vllm=True, env={}, role=config_key("judge_0"))


def test_each_role_is_held_to_its_own_context_length(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A row that fits the original model's 4096 tokens but not a judge's 300 is rejected,
    and the reason names the judge's key."""
    import json

    from raft_data.load import check_lengths, load_input

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "Why? " * 60, "answer": "Because. " * 10}) + "\n")
    data = {"name": "t", "input": {"path": str(src)}, "output": {"dir": "o"}, "model": str(tiny_model_dir)}
    assert not check_lengths(load_input(InputConfig(path=str(src))), PipelineConfig.model_validate(data)).rejected
    short = PipelineConfig.model_validate({**data, "engines": {"judges": [{"max_model_len": 300}]}})
    rejected = check_lengths(load_input(short.input), short).rejected
    assert len(rejected) == 1 and "engines.judges[0].max_model_len 300" in rejected[0].reason, rejected
    assert "the judge prompt" in rejected[0].reason


def test_manifest_records_each_roles_engine(tmp_path: Path, tiny_model_dir: Path) -> None:
    import json

    from raft_data.build import build

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"question": f"Element {i}?", "answer": f"Number {i}."}) + "\n" for i in range(3)))
    cfg = PipelineConfig.model_validate({
        "name": "e", "input": {"path": str(src)}, "output": {"dir": str(tmp_path / "out"), "shard_size": 2},
        "model": str(tiny_model_dir), "backend": {"engine": "transformers", "max_model_len": 1024},
        "rewrite": {"sampling": {"max_new_tokens": 4}}, "fusion": {"rounds": 1, "sampling": {"max_new_tokens": 4}},
        "engines": {"judges": [{"max_model_len": 512}]}, "measure_gap": False,
    })
    m = build(cfg).manifest
    assert m is not None
    original, judge, embedder = (m.models[r].engine for r in ("original", "judge_0", "embedder"))
    assert original is not None and judge is not None and embedder is not None
    assert (original.engine, original.device, original.dtype, original.max_model_len) == ("transformers", "cpu", "float32", 1024)
    assert original.tensor_parallel_size is None and original.engine_core is None  # not transformers settings
    assert judge.max_model_len == 512
    assert (embedder.engine, embedder.dtype) == ("sentence-transformers", "float32")

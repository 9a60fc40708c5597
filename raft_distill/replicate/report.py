"""The replication report: report.json (fractions), report.md (percent), report.png.

Columns follow the paper's Table 1: domain accuracy, general (general QA; MS-Bench in the
paper), instruction following (IFEval, the metric named in the config; default
prompt-level strict), and general multiple choice (log-likelihood benchmarks) when the
eval config runs it. Per arm: mean over seeds with sample std and min-max; relative
change vs SFT (`sft_raw`); fraction of SFT's general-score loss recovered; when the eval
results carry per-item scores, 95% bootstrap intervals over items and every arm's paired
difference from SFT, with its test and a sentence saying whether it is significant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raft_distill.evaluate.stats import describe, format_p
from raft_distill.replicate.table import METRICS, fmt_pct, fmt_stats

TITLES = {
    "domain": "domain acc",
    "domain_mc": "domain MC acc",
    "general": "general QA acc",
    "ifeval": "IFEval",
    "general_mc": "general MC acc",
}


def _ifeval_title(metric: str) -> str:
    level, mode = metric.split("_level_")
    return f"IFEval {level}-level {mode}"


def _metrics(report: dict[str, Any]) -> list[str]:
    """The report columns some arm has a score for, in METRICS order."""
    return [m for m in METRICS if any(m in row["stats"] for row in report["arms"])]


def _interval(st: dict[str, Any] | None) -> str:
    if st is None:
        return "-"
    return f"{fmt_pct(st['estimate'])} [{fmt_pct(st['low'])}, {fmt_pct(st['high'])}]"


def item_markdown(report: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """Intervals over items and paired differences vs SFT (empty without per-item scores)."""
    items = report.get("item_stats") or {}
    intervals, vs_sft = items.get("intervals", {}), items.get("vs_sft", {})
    metrics = [m for m in METRICS if any(m in v for v in intervals.values())]
    if not metrics:
        return []
    lines = [
        "",
        "## Scores (%) with 95% bootstrap intervals over items (items averaged over seeds)",
        "",
        "| arm | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for arm, per_metric in intervals.items():
        cells = [_interval(per_metric.get(m)) for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if not vs_sft:
        return lines
    lines += [
        "",
        "## Paired differences vs SFT (sft_raw), per item (points)",
        "",
        "| arm | metric | arm - SFT [95% CI] | test | p | significant |",
        "|---|---|---:|---|---:|---|",
    ]
    sentences = []
    for arm, per_metric in vs_sft.items():
        for metric in metrics:
            c = per_metric.get(metric)
            if c is None:
                continue
            d = c["diff"]
            lines.append(
                f"| {arm} | {titles[metric]} | {fmt_pct(d['estimate'], signed=True)} "
                f"[{fmt_pct(d['low'], signed=True)}, {fmt_pct(d['high'], signed=True)}] | "
                f"{c['test']} | {format_p(c)} | {'yes' if c['significant'] else 'no'} |"
            )
            sentences.append(f"- {describe(arm, 'sft_raw', titles[metric], c)}")
    return lines + [""] + sentences + _pairs_markdown(items.get("pairs") or [], metrics, titles)


def _pairs_markdown(pairs: list[dict[str, Any]], metrics: list[str], titles: dict[str, str]) -> list[str]:
    """Each ablation against the arm it varies (table.ABLATION_PAIRS), paired per item."""
    if not pairs:
        return []
    lines = [
        "",
        "## Ablations: each arm vs the arm it varies, per item (points)",
        "",
        "| arm | reference | question | metric | arm - reference [95% CI] | test | p | significant |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for pair in pairs:
        for metric in metrics:
            c = pair["metrics"].get(metric)
            if c is None:
                continue
            d = c["diff"]
            lines.append(
                f"| {pair['arm']} | {pair['reference']} | {pair['question']} | {titles[metric]} | "
                f"{fmt_pct(d['estimate'], signed=True)} [{fmt_pct(d['low'], signed=True)}, "
                f"{fmt_pct(d['high'], signed=True)}] | {c['test']} | {format_p(c)} | "
                f"{'yes' if c['significant'] else 'no'} |"
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    ifeval = _ifeval_title(report["ifeval_metric"])
    titles = {**TITLES, "ifeval": ifeval}
    rows = report["arms"]
    metrics = _metrics(report)
    recovered = report.get("recovered_metric", "general")
    lines = [
        "# RAFT replication report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Seeds: {report['seeds']}; trained at every seed: "
        f"{', '.join(report['all_seeds_arms']) or 'none'}; other arms at seed {report['seeds'][0]}. "
        "`base` is the untrained model (greedy eval, no seed).",
        f"Fit config: `{report['fit_config']}` + {json.dumps(report['fit_overrides'])}; "
        f"eval config: `{report['eval_config']}` + {json.dumps(report['eval_overrides'])}.",
        f"IFEval column: {ifeval} ({report['ifeval_metric']}). General column: the general QA "
        "suite (the paper's MS-Bench role).",
        "",
        "## Scores (%): mean ± sample std [min-max] over seeds",
        "",
        "| arm | seeds | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for row in rows:
        seeds = ",".join(str(s) for s in row["seeds"]) if row["arm"] != "base" else "-"
        cells = [fmt_stats(row["stats"].get(m)) for m in metrics]
        lines.append(f"| {row['arm']} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Relative change vs SFT (sft_raw): (method - SFT) / SFT, on seed means",
        "",
        "| arm | " + " | ".join(titles[m] for m in metrics)
        + f" | {recovered} loss recovered (method - SFT) / (Base - SFT) |",
        "|---|" + "---:|" * (len(metrics) + 1),
    ]
    for row in rows:
        rel = row["relative_change_vs_sft"]
        cells = [fmt_pct(rel.get(m), signed=True) + ("%" if rel.get(m) is not None else "") for m in metrics]
        rec = row[f"{recovered}_loss_recovered"]
        cells.append(fmt_pct(rec) + ("%" if rec is not None else ""))
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    lines += item_markdown(report, titles)
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += [
        "",
        "## Per seed (%)",
        "",
        "| arm | seed | " + " | ".join(titles[m] for m in metrics)
        + " | final lambda | final CE/KL ratio | fit s | model |",
        "|---|---:|" + "---:|" * (len(metrics) + 3) + "---|",
    ]
    for run in report["runs"]:
        cells = [fmt_pct(run["scores"].get(m)) for m in metrics]
        for key in ("final_lambda", "final_ce_kl_ratio", "fit_seconds"):
            value = run.get(key)
            cells.append("-" if value is None else f"{value:.3g}")
        seed = "-" if run["seed"] is None else str(run["seed"])
        lines.append(
            f"| {run['arm']} | {seed} | " + " | ".join(cells) + f" | `{run['model_path']}` |"
        )
    lines += ["", f"Plot: {report['plot']}", ""]
    return "\n".join(lines)


def _whiskers(report: dict[str, Any], row: dict[str, Any], metric: str) -> tuple[float, float]:
    """(below, above) the seed mean in points: the 95% item interval when the report has
    one (centred on the seed mean), else the seed min-max."""
    st = row["stats"][metric]
    ci = (report.get("item_stats") or {}).get("intervals", {}).get(row["arm"], {}).get(metric)
    if ci is not None:
        return 100 * (ci["estimate"] - ci["low"]), 100 * (ci["high"] - ci["estimate"])
    return 100 * (st["mean"] - st["min"]), 100 * (st["max"] - st["mean"])


def plot(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per arm (seed mean; whiskers: the 95%
    bootstrap interval over items when known, else min-max over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["arms"]
    metrics = _metrics(report)
    with_ci = bool((report.get("item_stats") or {}).get("intervals"))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 3), 4))
    for i, row in enumerate(rows):
        xs, means, lo, hi = [], [], [], []
        for j, metric in enumerate(metrics):
            st = row["stats"].get(metric)
            if st is None:
                continue
            xs.append(j + (i - (len(rows) - 1) / 2) * width)
            means.append(100 * st["mean"])
            below, above = _whiskers(report, row, metric)
            lo.append(below)
            hi.append(above)
        ax.bar(xs, means, width, yerr=[lo, hi], capsize=2, label=row["arm"])
    titles = {**TITLES, "ifeval": _ifeval_title(report["ifeval_metric"])}
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([titles[m] for m in metrics])
    ax.set_ylabel("score (%)")
    whiskers = "95% item bootstrap interval" if with_ci else "min-max over seeds"
    ax.set_title(f"RAFT replication: seed mean, whiskers {whiskers}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

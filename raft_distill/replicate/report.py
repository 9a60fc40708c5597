"""The replication report: report.json (fractions), report.md (percent), report.png.

Columns follow the paper's Table 1: domain accuracy, general (general QA; MS-Bench in the
paper), instruction following (IFEval, the metric named in the config; default
prompt-level strict). Per arm: mean over seeds with sample std and min-max; relative
change vs SFT (`sft_raw`); fraction of SFT's general-score loss recovered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raft_distill.replicate.table import METRICS, fmt_pct, fmt_stats

TITLES = {"domain": "domain acc", "general": "general QA acc", "ifeval": "IFEval"}


def _ifeval_title(metric: str) -> str:
    level, mode = metric.split("_level_")
    return f"IFEval {level}-level {mode}"


def markdown(report: dict[str, Any]) -> str:
    ifeval = _ifeval_title(report["ifeval_metric"])
    titles = {**TITLES, "ifeval": ifeval}
    rows = report["arms"]
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
        "| arm | seeds | " + " | ".join(titles[m] for m in METRICS) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for row in rows:
        seeds = ",".join(str(s) for s in row["seeds"]) if row["arm"] != "base" else "-"
        cells = [fmt_stats(row["stats"].get(m)) for m in METRICS]
        lines.append(f"| {row['arm']} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Relative change vs SFT (sft_raw): (method - SFT) / SFT, on seed means",
        "",
        "| arm | " + " | ".join(titles[m] for m in METRICS)
        + " | general loss recovered (method - SFT) / (Base - SFT) |",
        "|---|" + "---:|" * (len(METRICS) + 1),
    ]
    for row in rows:
        rel = row["relative_change_vs_sft"]
        cells = [fmt_pct(rel.get(m), signed=True) + ("%" if rel.get(m) is not None else "") for m in METRICS]
        rec = row["general_loss_recovered"]
        cells.append(fmt_pct(rec) + ("%" if rec is not None else ""))
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += [
        "",
        "## Per seed (%)",
        "",
        "| arm | seed | " + " | ".join(titles[m] for m in METRICS)
        + " | final lambda | final CE/KL ratio | fit s | model |",
        "|---|---:|" + "---:|" * (len(METRICS) + 3) + "---|",
    ]
    for run in report["runs"]:
        cells = [fmt_pct(run["scores"].get(m)) for m in METRICS]
        for key in ("final_lambda", "final_ce_kl_ratio", "fit_seconds"):
            value = run.get(key)
            cells.append("-" if value is None else f"{value:.3g}")
        seed = "-" if run["seed"] is None else str(run["seed"])
        lines.append(
            f"| {run['arm']} | {seed} | " + " | ".join(cells) + f" | `{run['model_path']}` |"
        )
    lines += ["", f"Plot: {report['plot']}", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per arm (seed mean, min-max whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["arms"]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 3), 4))
    for i, row in enumerate(rows):
        xs, means, lo, hi = [], [], [], []
        for j, metric in enumerate(METRICS):
            st = row["stats"].get(metric)
            if st is None:
                continue
            xs.append(j + (i - (len(rows) - 1) / 2) * width)
            means.append(100 * st["mean"])
            lo.append(100 * (st["mean"] - st["min"]))
            hi.append(100 * (st["max"] - st["mean"]))
        ax.bar(xs, means, width, yerr=[lo, hi], capsize=2, label=row["arm"])
    ax.set_xticks(range(len(METRICS)))
    ax.set_xticklabels(
        [TITLES["domain"], TITLES["general"], _ifeval_title(report["ifeval_metric"])]
    )
    ax.set_ylabel("score (%)")
    ax.set_title("RAFT replication: seed mean, min-max whiskers")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The replication report: report.json (fractions; NLL in nats), report.md, report.png.

Columns follow the paper's Table 1: domain accuracy, general (general QA; MS-Bench in the
paper), instruction following (IFEval, the metric named in the config; default
prompt-level strict), and the log-likelihood columns when the eval config runs them; plus,
when the results carry them, the held-out domain NLL (nats, lower is better), accuracy on
training questions asked again (`seen`) and general MC without BoolQ. Per arm: mean over
seeds with sample std and min-max; relative change vs SFT (`sft_raw`); fraction of SFT's
general-score loss recovered; with per-item scores, 95% intervals (seeds, then items) and
every arm's difference from SFT by the two-level bootstrap with raw and Holm-adjusted p
(one seed on a side: suggestive only), flips vs Base, the leak and IFEval cut-share
diagnostics; the trade-off between domain learning and retention with its Pareto front
(tradeoff.py). Reports written before these additions still render.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raft_distill.evaluate.stats import describe, format_p
from raft_distill.replicate import tradeoff
from raft_distill.replicate.table import (
    LEAK_SUITES,
    LOWER_IS_BETTER,
    METRICS,
    fmt_pct,
    fmt_stats,
    fmt_value,
)

TITLES = {
    "domain": "domain acc",
    "domain_mc": "domain MC acc",
    "general": "general QA acc",
    "ifeval": "IFEval",
    "general_mc": "general MC acc",
    "general_mc_no_boolq": "general MC acc without BoolQ",
    "seen": "seen acc (training questions)",
    "domain_nll": "domain NLL (nats, lower is better)",
}


def _ifeval_title(metric: str) -> str:
    level, mode = metric.split("_level_")
    return f"IFEval {level}-level {mode}"


def _metrics(report: dict[str, Any]) -> list[str]:
    """The report columns some arm has a score for, in METRICS order."""
    return [m for m in METRICS if any(m in row["stats"] for row in report["arms"])]


def _interval(st: dict[str, Any] | None, metric: str) -> str:
    if st is None:
        return "-"
    low, high = fmt_value(metric, st["low"]), fmt_value(metric, st["high"])
    return f"{fmt_value(metric, st['estimate'])} [{low}, {high}]"


def _diff(c: dict[str, Any], metric: str) -> str:
    d = c["diff"]
    low, high = fmt_value(metric, d["low"], signed=True), fmt_value(metric, d["high"], signed=True)
    return f"{fmt_value(metric, d['estimate'], signed=True)} [{low}, {high}]"


def _cells(c: dict[str, Any], metric: str) -> str:
    """diff [CI] | test | p | Holm p | verdict (older reports: no Holm p, yes/no)."""
    verdict = c.get("verdict") or ("yes" if c["significant"] else "no")
    return (
        f"{_diff(c, metric)} | {c['test']} | {format_p(c)} | {format_p(c, adjusted=True)} | "
        f"{verdict}"
    )


def _sentence(
    name_b: str, name_a: str, metric: str, titles: dict[str, str], c: dict[str, Any]
) -> str:
    nll = metric in LOWER_IS_BETTER
    unit = "nats" if nll else "points"
    return f"- {describe(name_b, name_a, titles[metric], c, unit=unit, lower_is_better=nll)}"


def _item_metrics(items: dict[str, Any]) -> list[str]:
    seen = [*items.get("intervals", {}).values(), *items.get("vs_sft", {}).values()]
    return [m for m in METRICS if any(m in v for v in seen)]


def item_markdown(report: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """Intervals and paired differences vs SFT (empty without per-item scores)."""
    items = report.get("item_stats") or {}
    intervals, vs_sft = items.get("intervals", {}), items.get("vs_sft", {})
    metrics = _item_metrics(items)
    if not metrics:
        return []
    pairs = items.get("pairs") or []
    compared = [*vs_sft.values(), *(p["metrics"] for p in pairs)]
    how = (
        "seeds resampled, then items"
        if any("p_holm" in c for per in compared for c in per.values())
        else "items averaged over seeds"
    )
    lines = [
        "",
        f"## Scores (%) with 95% bootstrap intervals over items ({how}; NLL in nats)",
        "",
        "| arm | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for arm, per_metric in intervals.items():
        cells = [_interval(per_metric.get(m), m) for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if not vs_sft:  # an ablation run without sft_raw still reports its pairs
        return lines + _pairs_markdown(pairs, metrics, titles)
    lines += [
        "",
        "## Paired differences vs SFT (sft_raw), per item (points); NLL in nats",
        "",
        "Significant: Holm-adjusted p < 0.05 over all comparisons in this report, with two "
        "seeds or more on both sides; with one seed on a side the p is shown but the "
        "difference is only suggestive (the seed spread is unknown).",
        "",
        "| arm | metric | arm - SFT [95% CI] | test | p | p (Holm) | significant |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    sentences = []
    for arm, per_metric in vs_sft.items():
        for metric in metrics:
            if (c := per_metric.get(metric)) is not None:
                lines.append(f"| {arm} | {titles[metric]} | {_cells(c, metric)} |")
                sentences.append(_sentence(arm, "sft_raw", metric, titles, c))
    return lines + [""] + sentences + _pairs_markdown(pairs, metrics, titles)


def _pairs_markdown(
    pairs: list[dict[str, Any]], metrics: list[str], titles: dict[str, str]
) -> list[str]:
    """Each ablation against the arm it varies (table.ABLATION_PAIRS), paired per item."""
    if not pairs:
        return []
    lines = [
        "",
        "## Ablations: each arm vs the arm it varies, per item (points); NLL in nats",
        "",
        "| arm | reference | question | metric | arm - reference [95% CI] | test | p | "
        "p (Holm) | significant |",
        "|---|---|---|---|---:|---|---:|---:|---|",
    ]
    for pair in pairs:
        for metric in metrics:
            if (c := pair["metrics"].get(metric)) is not None:
                lines.append(
                    f"| {pair['arm']} | {pair['reference']} | {pair['question']} | "
                    f"{titles[metric]} | {_cells(c, metric)} |"
                )
    return lines


def flips_markdown(report: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """Items right at Base and wrong after training (lost) and the reverse (gained)."""
    flips = (report.get("item_stats") or {}).get("flips") or {}
    metrics = [m for m in METRICS if any(m in f for f in flips.values())]
    if not metrics:
        return []
    lines = [
        "",
        "## Flips vs Base (sample-wise forgetting): items lost (right -> wrong) / gained "
        "(wrong -> right), mean over seeds",
        "",
        "| arm | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for arm, per in flips.items():
        cells = [
            "-"
            if (f := per.get(m)) is None
            else f"{f['lost']:.1f} / {f['gained']:.1f} (n={f['n']})"
            for m in metrics
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _leak_cell(counts: dict[str, Any] | None, st: dict[str, Any] | None) -> str:
    if counts is not None and counts["n"]:
        return f"{counts['count']:g}/{counts['n']} ({fmt_pct(counts['share'])}%)"
    return "-" if st is None else f"{fmt_stats(st)}%"


def diagnostics_markdown(report: dict[str, Any]) -> list[str]:
    """Per arm: responses that talk about a reference (leak), per generated suite (pooled
    over seeds), and IFEval's share cut at max_new_tokens (mean ± std over seeds)."""
    leak = (report.get("item_stats") or {}).get("leak") or {}
    rows = report["arms"]
    suites = [
        s
        for s in LEAK_SUITES
        if any(s in per for per in leak.values())
        or any(f"leak_{s}" in r.get("diagnostics", {}) for r in rows)
    ]
    cut = any("ifeval_cut_share" in r.get("diagnostics", {}) for r in rows)
    if not suites and not cut:
        return []
    head = [f"leak {s}" for s in suites] + (["IFEval cut at max_new_tokens (%)"] if cut else [])
    lines = [
        "",
        "## Diagnostics: responses that talk about a reference (leak; count/n pooled over "
        "seeds) and IFEval responses cut at max_new_tokens",
        "",
        "| arm | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    for row in rows:
        cells = [
            _leak_cell(leak.get(row["arm"], {}).get(s), row.get("diagnostics", {}).get(f"leak_{s}"))
            for s in suites
        ]
        if cut:
            cells.append(fmt_stats(row.get("diagnostics", {}).get("ifeval_cut_share")))
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    return lines


def _header(report: dict[str, Any], ifeval: str) -> list[str]:
    return [
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
    ]


def _seed_tables(report: dict[str, Any], metrics: list[str], titles: dict[str, str]) -> list[str]:
    """Mean ± std [min-max] over seeds, and the relative change vs SFT with the loss
    recovered."""
    rows = report["arms"]
    recovered = report.get("recovered_metric", "general")
    lines = [
        "",
        "## Scores (%): mean ± sample std [min-max] over seeds (NLL in nats)",
        "",
        "| arm | seeds | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for row in rows:
        seeds = ",".join(str(s) for s in row["seeds"]) if row["arm"] != "base" else "-"
        cells = [fmt_stats(row["stats"].get(m), m) for m in metrics]
        lines.append(f"| {row['arm']} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Relative change vs SFT (sft_raw): (method - SFT) / SFT, on seed means"
        + (" (NLL: negative = better)" if any(m in LOWER_IS_BETTER for m in metrics) else ""),
        "",
        "| arm | "
        + " | ".join(titles[m] for m in metrics)
        + f" | {recovered} loss recovered (method - SFT) / (Base - SFT) |",
        "|---|" + "---:|" * (len(metrics) + 1),
    ]
    for row in rows:
        rel = row["relative_change_vs_sft"]
        cells = [
            fmt_pct(rel.get(m), signed=True) + ("%" if rel.get(m) is not None else "")
            for m in metrics
        ]
        rec = row[f"{recovered}_loss_recovered"]
        cells.append(fmt_pct(rec) + ("%" if rec is not None else ""))
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    return lines


def _per_seed(report: dict[str, Any], metrics: list[str], titles: dict[str, str]) -> list[str]:
    lines = [
        "",
        "## Per seed (%; NLL in nats)",
        "",
        "| arm | seed | "
        + " | ".join(titles[m] for m in metrics)
        + " | final lambda | final CE/KL ratio | fit s | model |",
        "|---|---:|" + "---:|" * (len(metrics) + 3) + "---|",
    ]
    for run in report["runs"]:
        cells = [fmt_value(m, run["scores"].get(m)) for m in metrics]
        for key in ("final_lambda", "final_ce_kl_ratio", "fit_seconds"):
            value = run.get(key)
            cells.append("-" if value is None else f"{value:.3g}")
        seed = "-" if run["seed"] is None else str(run["seed"])
        lines.append(
            f"| {run['arm']} | {seed} | " + " | ".join(cells) + f" | `{run['model_path']}` |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    ifeval = _ifeval_title(report["ifeval_metric"])
    titles = {**TITLES, "ifeval": ifeval}
    metrics = _metrics(report)
    lines = _header(report, ifeval) + _seed_tables(report, metrics, titles)
    lines += item_markdown(report, titles)
    lines += flips_markdown(report, titles)
    lines += diagnostics_markdown(report)
    lines += tradeoff.markdown_lines(report["arms"], titles)
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += _per_seed(report, metrics, titles)
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


def _bars(ax: Any, report: dict[str, Any], titles: dict[str, str]) -> None:
    """Grouped bars: one group per percent column (NLL is on the trade-off panels), one bar
    per arm at its seed mean; whiskers: the 95% item interval when known, else min-max."""
    rows = report["arms"]
    metrics = [m for m in _metrics(report) if m not in LOWER_IS_BETTER]
    with_ci = bool((report.get("item_stats") or {}).get("intervals"))
    width = 0.8 / max(1, len(rows))
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
        ax.bar(xs, means, width, yerr=[lo, hi], capsize=2, label=row["arm"], color=f"C{i % 10}")
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([titles[m] for m in metrics], fontsize=8)
    ax.set_ylabel("score (%)")
    whiskers = "95% item bootstrap interval" if with_ci else "min-max over seeds"
    ax.set_title(f"RAFT replication: seed mean, whiskers {whiskers}")
    ax.legend(fontsize=8, ncol=2)


def figure(report: dict[str, Any], out_dir: Path) -> Any:
    """The report's figure: the bars on top; below, domain learning vs each retention score
    (tradeoff.py) and, when merge arms left one in `out_dir`, their validation alpha grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {**TITLES, "ifeval": _ifeval_title(report["ifeval_metric"])}
    t = tradeoff.tradeoff(report["arms"])
    grids = tradeoff.merge_grids(out_dir, report["runs"])
    lower = len(t["panels"]) + bool(grids)
    colors = {row["arm"]: f"C{i % 10}" for i, row in enumerate(report["arms"])}
    width = max(6.0, 1.2 * len(report["arms"]) + 3, 5.0 * lower)
    fig = plt.figure(figsize=(width, 8.5 if lower else 4))
    _bars(fig.add_subplot(2 if lower else 1, 1, 1), report, titles)
    for i, panel in enumerate(t["panels"]):
        ax = fig.add_subplot(2, lower, lower + i + 1)
        tradeoff.plot_panel(ax, panel, t["x"], titles, colors)
    if grids:
        tradeoff.plot_merge_grid(fig.add_subplot(2, lower, 2 * lower), grids)
    fig.tight_layout()
    return fig


def plot(report: dict[str, Any], path: Path) -> Path:
    """report.png (`figure`); merge grids are looked for beside `path`, the output folder."""
    import matplotlib.pyplot as plt

    fig = figure(report, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

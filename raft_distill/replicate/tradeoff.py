"""Domain learning against retention: does a method buy its retention with less learning?

One point per arm at its seed mean, with the seed min-max as error bars:
- x, domain learning: the drop of the held-out domain NLL vs Base (Base - arm, nats; higher
  = learned more, because a LOWER NLL is better), or, in reports without `domain_nll`, the
  accuracy on training questions asked again (`seen`);
- y, retention: IFEval, and general QA (general MC when the report has no general QA).
The Pareto front is the trained arms that no other trained arm beats on both axes (Base is
drawn as the reference; it learns nothing by definition, so it is no candidate).

Merge arms (`*merge*`) may leave the validation grid they chose alpha on beside the model,
`<output_dir>/<arm>/seed<k>/final/merge_report.json`; `plot_merge_grid` draws it when
present.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BASE = "base"
X_TITLES = {"domain_nll": "domain NLL drop vs base (nats)", "seen": "seen accuracy (%)"}
# retention panels: (metric, fallback when the report lacks it)
RETENTION = (("ifeval", None), ("general", "general_mc"))


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The names no other point dominates (>= on both axes, > on one; higher is better on
    both), in the input order."""

    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())

    return [name for name, p in points.items() if not dominated(p)]


def _stats(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Mapping[str, Any]]:
    return {r["arm"]: r["stats"][metric] for r in rows if metric in r["stats"]}


def learning_axis(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """`domain_nll` when Base and some trained arm have it, else `seen` when some arm has
    it, else None (no trade-off to show)."""
    nll = _stats(rows, "domain_nll")
    if BASE in nll and len(nll) > 1:
        return "domain_nll"
    return "seen" if _stats(rows, "seen") else None


def _x(st: Mapping[str, Any], axis: str, base_nll: float | None) -> list[float]:
    """[mean, low, high] of the learning axis; the NLL drop's low end is the arm's highest
    NLL."""
    if axis == "domain_nll" and base_nll is not None:
        return [base_nll - st["mean"], base_nll - st["max"], base_nll - st["min"]]
    return [st["mean"], st["min"], st["max"]]


def tradeoff(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"x": axis or None, "panels": [{"y", "points": {arm: {"x", "y"}}, "front"}]}; each
    point's x and y are [seed mean, min, max]; panels only where some trained arm has both."""
    axis = learning_axis(rows)
    if axis is None:
        return {"x": None, "panels": []}
    xs = _stats(rows, axis)
    base_nll = xs[BASE]["mean"] if axis == "domain_nll" and BASE in xs else None
    panels = []
    for metric, fallback in RETENTION:
        ys = _stats(rows, metric) or (_stats(rows, fallback) if fallback else {})
        y_metric = metric if _stats(rows, metric) or not fallback else fallback
        points = {
            arm: {
                "x": _x(xs[arm], axis, base_nll),
                "y": [ys[arm][k] for k in ("mean", "min", "max")],
            }
            for arm in xs
            if arm in ys
        }
        trained = {a: (p["x"][0], p["y"][0]) for a, p in points.items() if a != BASE}
        if trained:
            panels.append({"y": y_metric, "points": points, "front": pareto_front(trained)})
    return {"x": axis, "panels": panels}


def markdown_lines(rows: Sequence[Mapping[str, Any]], titles: Mapping[str, str]) -> list[str]:
    """The trade-off table and each panel's Pareto front, in words (empty without an axis)."""
    t = tradeoff(rows)
    if not t["panels"]:
        return []
    axis = t["x"]
    scale = 1.0 if axis == "domain_nll" else 100.0
    digits = 3 if axis == "domain_nll" else 1
    arms = list(dict.fromkeys(a for p in t["panels"] for a in p["points"]))
    lines = [
        "",
        f"## Trade-off: domain learning ({X_TITLES[axis]}) vs retention, seed means",
        "",
        f"| arm | {X_TITLES[axis]} | "
        + " | ".join(f"{titles[p['y']]} (%)" for p in t["panels"])
        + " |",
        "|---|---:|" + "---:|" * len(t["panels"]),
    ]
    for arm in arms:
        first = next(p["points"][arm] for p in t["panels"] if arm in p["points"])
        cells = [f"{scale * first['x'][0]:.{digits}f}"]
        for p in t["panels"]:
            pt = p["points"].get(arm)
            star = " *" if arm in p["front"] else ""
            cells.append("-" if pt is None else f"{100 * pt['y'][0]:.1f}{star}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`*`: on the Pareto front among trained arms (more learning and more retention; none dominates them).",
    ]
    for p in t["panels"]:
        lines.append(f"- Pareto front ({titles[p['y']]}): {', '.join(p['front'])}")
    return lines


def merge_grids(out_dir: Path, runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The merge arms' validation grids found beside their models ({"arm", "seed", "alpha",
    "grid"}); runs without the file or with an empty grid (alpha fixed) are skipped."""
    found = []
    for run in runs:
        if "merge" not in run["arm"] or run.get("seed") is None:
            continue
        path = out_dir / run["arm"] / f"seed{run['seed']}" / "final" / "merge_report.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if data.get("grid"):
            found.append(
                {
                    "arm": run["arm"],
                    "seed": run["seed"],
                    "alpha": data.get("alpha"),
                    "grid": data["grid"],
                }
            )
    return found


def plot_panel(
    ax: Any,
    panel: Mapping[str, Any],
    axis: str,
    titles: Mapping[str, str],
    colors: Mapping[str, str],
) -> None:
    """One retention panel: each arm at its seed mean with min-max bars, labelled, in its
    bar's colour; the Pareto front ringed."""
    scale = 1.0 if axis == "domain_nll" else 100.0
    for arm, p in panel["points"].items():
        x, y = scale * p["x"][0], 100 * p["y"][0]
        xerr = [[x - scale * p["x"][1]], [scale * p["x"][2] - x]]
        yerr = [[y - 100 * p["y"][1]], [100 * p["y"][2] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=2, color=colors.get(arm))
        if arm in panel["front"]:
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="red", zorder=3)
        ax.annotate(arm, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(X_TITLES[axis])
    ax.set_ylabel(f"{titles[panel['y']]} (%)")
    ax.set_title(f"learning vs {titles[panel['y']]} (red ring: Pareto front)", fontsize=9)


def plot_merge_grid(ax: Any, grids: Sequence[Mapping[str, Any]]) -> None:
    """Validation domain NLL vs validation general MC per alpha, one line per merge run,
    the chosen alpha starred."""
    for g in grids:
        rows = sorted(g["grid"], key=lambda r: r["alpha"])
        xs = [r["domain_nll"] for r in rows]
        ys = [100 * r["general_mc"] for r in rows]
        (line,) = ax.plot(xs, ys, marker=".", label=f"{g['arm']} seed {g['seed']}")
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(
                f"{r['alpha']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6
            )
            if g["alpha"] is not None and abs(r["alpha"] - g["alpha"]) < 1e-9:
                ax.scatter([x], [y], marker="*", s=120, color=line.get_color(), zorder=3)
    ax.set_xlabel("validation domain NLL (nats, lower is better)")
    ax.set_ylabel("validation general MC (%)")
    ax.set_title("merge alpha grid (star: chosen)", fontsize=9)
    ax.legend(fontsize=7)

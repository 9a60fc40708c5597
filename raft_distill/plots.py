"""Plots of a run's metrics: the losses, lambda and the CE/KL ratio per step.

The ratio L_SFT / (lambda * L_KL) is the quantity the paper tracks to show why EMA
balancing matters (it stays near 1 with EMA, drifts to 3-28 with a fixed lambda).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def plot_metrics(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write losses.png and lambda_ratio.png into `out_dir`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    written: list[Path] = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss_sft", "L_SFT"), ("loss_kl", "L_KL"), ("loss", "L total")):
        x, y = _series(rows, key)
        if x:
            ax.plot(x, y, marker=".", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("RAFT stage 2 losses")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "losses.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    x, y = _series(rows, "lambda")
    ax1.plot(x, y, marker=".", color="tab:purple")
    ax1.set_ylabel("lambda")
    ax1.set_title("EMA balance")
    x, y = _series(rows, "ce_kl_ratio")
    ax2.plot(x, y, marker=".", color="tab:green", label="L_SFT / (lambda L_KL)")
    ax2.axhline(1.0, color="grey", linewidth=0.8)
    ax2.set_xlabel("step")
    ax2.set_ylabel("CE/KL ratio")
    ax2.legend()
    fig.tight_layout()
    path = out_dir / "lambda_ratio.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written

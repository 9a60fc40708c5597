"""`raft-data inspect`: a terminal summary of a built dataset, to judge it before training.

Where the rows went (decision, reason), how the scores are spread (similarity, judge
score, NLL of gold vs final answer under the original model), which rows overflow the
teacher context, and a few rows with gold / rewrite / final side by side. Plain text, no
colour: the same string goes to a terminal, a log or a test.
"""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.manifest import Manifest, read_manifest
from schemas.parquet_io import read_records
from schemas.records import RefinedRecord, RejectedRecord

HIST_BINS = 10
HIST_WIDTH = 30


def inspect_dataset(folder: str | Path, rows: int = 3, width: int = 100) -> str:
    """Read a dataset folder (manifest + Parquet files) and format its summary."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    refined = read_records([folder / f for f in manifest.data_files], RefinedRecord, validate_rows=False)
    rejected = read_records([folder / f for f in manifest.rejected_files], RejectedRecord, validate_rows=False)
    return format_inspection(manifest, refined.to_pylist(), rejected.to_pylist(), rows=rows, width=width)


def format_inspection(
    manifest: Manifest,
    refined: Sequence[dict[str, Any]],
    rejected: Sequence[dict[str, Any]],
    rows: int = 3,
    width: int = 100,
) -> str:
    """The whole summary as one string (pure: rows in, text out)."""
    width = max(40, width)
    c = manifest.counts
    intro = [
        f"{manifest.pipeline_name}: schema {manifest.schema_name} {manifest.schema_version}, "
        f"config {manifest.config_hash}, built {manifest.created_at} (raft-toolkit {manifest.tool_version})",
        f"rows in {c.rows_in}: accepted {c.accepted}, fallback {c.fallback}, rejected {c.rejected}; "
        f"over teacher length {c.over_length}",
    ]
    out = [w for line in intro for w in textwrap.wrap(line, width, subsequent_indent="  ")] + [""]
    tables = _counts_section(refined, rejected) + _scores_section(refined)
    out += [line if len(line) <= width else line[: width - 3] + "..." for line in tables]
    out += _over_length_section(refined, width)
    out += _rows_section(refined, rows, width)
    return "\n".join(out).rstrip() + "\n"


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in header]] + [[str(v) for v in row] for row in body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  " + "  ".join(padded).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
        return True
    except ValueError:
        return text == "-"


def _counts_section(refined: Sequence[dict[str, Any]], rejected: Sequence[dict[str, Any]]) -> list[str]:
    total = len(refined) + len(rejected)
    decisions = Counter(r["decision"] for r in refined)
    decisions["rejected"] = len(rejected)
    share = lambda n: f"{100 * n / total:.1f}%" if total else "-"  # noqa: E731
    out = ["decisions"]
    out += _table(["decision", "rows", "share"], [[d, decisions.get(d, 0), share(decisions.get(d, 0))] for d in ("accepted", "fallback", "rejected")])
    reasons: Counter[tuple[str, str]] = Counter(
        (r["decision"], r["reason"].split(":", 1)[0]) for r in refined
    )
    for r in rejected:
        reasons[("rejected", f"{r['field']}: {r['reason']}"[:60])] += 1
    out += ["", "reasons"]
    out += _table(
        ["decision", "reason", "rows"],
        [[d, why, n] for (d, why), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
    )
    return out + [""]


def _stats(values: Sequence[float]) -> list[str]:
    if not values:
        return ["0", "-", "-", "-", "-"]
    return [
        str(len(values)),
        f"{min(values):.3f}",
        f"{statistics.median(values):.3f}",
        f"{statistics.fmean(values):.3f}",
        f"{max(values):.3f}",
    ]


def histogram(values: Sequence[float], bins: int = HIST_BINS, bar_width: int = HIST_WIDTH) -> list[str]:
    """A text histogram: one line per bin, `lo-hi | ##### n`."""
    if not values:
        return ["  (no values)"]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / span * bins))] += 1
    peak = max(counts)
    lines = []
    for i, n in enumerate(counts):
        a = lo + span * i / bins
        b = lo + span * (i + 1) / bins
        bar = "#" * (round(n / peak * bar_width) if n else 0)
        lines.append(f"  {a:7.3f} - {b:7.3f} | {bar:<{bar_width}} {n}")
    return lines


def _scores_section(refined: Sequence[dict[str, Any]]) -> list[str]:
    def col(name: str) -> list[float]:
        return [float(r[name]) for r in refined if r.get(name) is not None]

    sims, judged = col("similarity"), col("fusion_score")
    gold, final = col("gold_nll"), col("final_nll")
    change = [
        float(r["final_nll"]) - float(r["gold_nll"])
        for r in refined
        if r.get("final_nll") is not None and r.get("gold_nll") is not None
    ]
    out = ["scores"]
    out += _table(
        ["score", "n", "min", "median", "mean", "max"],
        [
            ["similarity (gold, rewrite)", *_stats(sims)],
            ["judge score (fusion)", *_stats(judged)],
            ["NLL gold answer", *_stats(gold)],
            ["NLL final answer", *_stats(final)],
            ["NLL final - gold", *_stats(change)],
        ],
    )
    out += ["", "similarity histogram"] + histogram(sims)
    out += ["", "judge score histogram"] + histogram(judged)
    return out + [""]


def _over_length_section(refined: Sequence[dict[str, Any]], width: int) -> list[str]:
    over = [r for r in refined if r.get("over_length")]
    out = [f"over-length rows: {len(over)}"]
    for r in over[:5]:
        line = f"source_row {r['source_row']}: {r['teacher_context_tokens']} tokens; {r.get('over_length_reason') or ''}"
        out.append("  " + textwrap.shorten(line, width=width - 2, placeholder=" ..."))
    if len(over) > 5:
        out.append(f"  ... and {len(over) - 5} more")
    return out + [""]


def side_by_side(columns: Sequence[tuple[str, str]], width: int) -> list[str]:
    """Texts in equal columns, wrapped, separated by ` | `."""
    n = len(columns)
    col_w = max(10, (width - 3 * (n - 1)) // n)
    wrapped = []
    for title, text in columns:
        lines: list[str] = []
        for para in (text or "").splitlines() or [""]:
            lines += textwrap.wrap(para, col_w) or [""]
        wrapped.append([title.upper(), "-" * min(col_w, max(len(title), 4)), *lines])
    height = max(len(w) for w in wrapped)
    out = []
    for i in range(height):
        cells = [(w[i] if i < len(w) else "").ljust(col_w) for w in wrapped]
        out.append(" | ".join(cells).rstrip())
    return out


def _rows_section(refined: Sequence[dict[str, Any]], rows: int, width: int) -> list[str]:
    shown = list(refined[:rows])
    if not shown:
        return []
    out = [f"rows (first {len(shown)} of {len(refined)})"]
    for r in shown:
        head = (
            f"== source_row {r['source_row']} | {r['decision']} ({r['reason']}) | final from {r['final_source']}"
        )
        sim = r.get("similarity")
        if sim is not None:
            head += f" | similarity {sim:.3f}"
        out += ["", textwrap.shorten(head, width=width, placeholder=" ..."), textwrap.shorten("Q: " + r["question"], width=width, placeholder=" ...")]
        out += side_by_side(
            [("gold", r["gold_answer"]), ("rewrite", r.get("rewrite") or "(none)"), ("final", r["final_answer"])],
            width,
        )
    return out

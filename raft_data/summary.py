"""The closing summary a build prints: where every row went, and how fast each stage ran."""

from __future__ import annotations

from pathlib import Path

from schemas.manifest import Manifest


def format_summary(manifest: Manifest, folder: Path, done: int, skipped: int) -> str:
    c = manifest.counts
    lines = [
        f"raft-data build '{manifest.pipeline_name}' -> {folder}",
        f"  shards: {done} built, {skipped} reused",
        f"  rows in {c.rows_in}: accepted {c.accepted}, fell back to gold {c.fallback}, "
        f"rejected {c.rejected}; over teacher length {c.over_length}",
        "  reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(c.by_reason.items(), key=lambda kv: -kv[1])),
        "  answer check: " + ", ".join(f"{k} {v}" for k, v in sorted(c.answer_check.items()))
        + f"; accepted rows with an omitted gold fact (flagged): {c.omissions_flagged}"
        + f"; rows with meta text (about the prompt, not an answer): {c.meta_text}",
    ]
    gap = manifest.compatibility_gap
    if gap.gold_nll_mean is not None and gap.final_nll_mean is not None:
        lines.append(
            f"  compatibility gap (NLL nats/token): gold {gap.gold_nll_mean:.3f} -> final {gap.final_nll_mean:.3f}"
        )
    lines.append("  stage      seconds  requests  cached  gen_tokens  tokens/s")
    for stage, t in manifest.timings.items():
        if stage == "total":
            lines.append(f"  {'total':<9}{t.seconds:>8.1f}")
            continue
        lines.append(
            f"  {stage:<9}{t.seconds:>8.1f}{t.requests:>10}{t.cached:>8}{t.generated_tokens:>12}{t.tokens_per_s:>10.1f}"
        )
    lines.append(f"  load it: datasets.load_dataset('{folder}', split='train')")
    return "\n".join(lines)

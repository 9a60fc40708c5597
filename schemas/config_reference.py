"""Every config key, read off the Pydantic models: `raft-data config`, `raft-distill config`.

The models are the one source. A key's type, default, bounds and help text are its field's
annotation, default and `description`, so the reference cannot drift from what the loaders
accept. A nested model is a section (one level per dot); a list of models is a section too
(`models[].name`); a section whose default is absent (`judge`) is optional. Defaults are
read off the parent's default, so a section built with other values than its class's
(`fusion.judge_sampling`) shows the values a run gets.
"""

from __future__ import annotations

import json
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()  # the default of a key that has none


@dataclass(frozen=True)
class ConfigKey:
    """One leaf key: `key` is its dotted path as written in YAML and in `--set`."""

    key: str
    type: str
    default: Any
    bounds: str
    help: str


@dataclass(frozen=True)
class ConfigSection:
    """A nested model: `optional` when it is absent by default (remove it to leave it off)."""

    key: str
    help: str
    optional: bool
    many: bool


def section_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field nests (Optional and list[...] unwrapped) and whether it is a list."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_union(annotation) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        inner, _ = section_model(typing.get_args(annotation)[0])
        return inner, inner is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def literal_choices(annotation: Any) -> list[Any]:
    """The allowed values of a Literal (Optional unwrapped); [] for any other type."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if all(typing.get_origin(a) is Literal for a in args):
            return [v for a in args for v in typing.get_args(a)]
    return []


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: `auto | vllm`, `int | null`, `list[str]`."""
    if annotation is type(None) or annotation is None:
        return "null"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(_plain_text(v) for v in typing.get_args(annotation))
    if _is_union(annotation):
        args = typing.get_args(annotation)
        ordered = [a for a in args if a is not type(None)] + [a for a in args if a is type(None)]
        return " | ".join(type_name(a) for a in ordered)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def walk(model: type[BaseModel], prefix: str = "", defaults: Any = None) -> list[ConfigKey | ConfigSection]:
    """Every section and leaf key of `model`, in field order; `defaults` is the instance
    whose values are the defaults (else each field's own)."""
    out: list[ConfigKey | ConfigSection] = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        default = _default(field, name, defaults)
        sub, many = section_model(field.annotation)
        if sub is None:
            out.append(ConfigKey(key, type_name(field.annotation), default, bounds(field), _help(field)))
            continue
        doc = field.description or _doc(sub)
        out.append(ConfigSection(key, doc, optional=default is None, many=many))
        inner = default if isinstance(default, sub) else None
        out += walk(sub, key + ("[]." if many else "."), inner)
    return out


def config_keys(model: type[BaseModel]) -> list[ConfigKey]:
    """The leaf keys of `model` (what a YAML file or `--set` can set)."""
    return [entry for entry in walk(model) if isinstance(entry, ConfigKey)]


def bounds(field: FieldInfo) -> str:
    """The field's numeric and length constraints, e.g. `>= 0, <= 1`."""
    marks = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                marks.append(f"{sign} {value}")
        if isinstance(item, annotated_types.MinLen):
            marks.append(f"at least {item.min_length} item(s)")
    return ", ".join(marks)


def format_reference(model: type[BaseModel], title: str, search: str | None = None, width: int = 88) -> str:
    """Every key as `key: type = default (bounds)` and its help text indented below;
    `search` keeps the keys whose dotted path contains it (no section lines then)."""
    lines = [f"# {title}", "# Set a key in the YAML file or on the command line: --set KEY=VALUE.", ""]
    entries = walk(model)
    if search:
        entries = [e for e in entries if isinstance(e, ConfigKey) and search.lower() in e.key.lower()]
        if not entries:
            lines.append(f"(no key contains '{search}')")
    for entry in entries:
        if isinstance(entry, ConfigSection):
            kind = " (optional: absent = off)" if entry.optional else " (a list)" if entry.many else ""
            text = f"[{entry.key}]{kind} {entry.help}".rstrip()
            lines += ["", *textwrap.wrap(text, width, subsequent_indent="    ")]
            continue
        default = ", required" if entry.default is REQUIRED else f" = {render_value(entry.default)}"
        bound = f"  ({entry.bounds})" if entry.bounds else ""
        lines.append(f"{entry.key}: {entry.type}{default}{bound}")
        if entry.help:
            lines += textwrap.wrap(entry.help, width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def format_yaml(model: type[BaseModel], title: str, width: int = 88) -> str:
    """A full YAML file of every key at its default, each commented with its type and help;
    required keys are left empty, optional sections commented out."""
    head = [f"# {title}", "# Every key at its default; fill the keys marked REQUIRED.", ""]
    return "\n".join(head + _yaml_lines(model, None, 0, width)) + "\n"


def render_value(value: Any) -> str:
    """A default as one line of YAML (strings with line breaks keep their escapes)."""
    if isinstance(value, str) and "\n" in value:  # one line: a JSON string is YAML too
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _yaml_lines(model: type[BaseModel], defaults: Any, indent: int, width: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        default = _default(field, name, defaults)
        sub, many = section_model(field.annotation)
        wrap = max(width - indent - 2, 40)
        if sub is None:
            note = f"{type_name(field.annotation)}" + (f"; {bounds(field)}" if bounds(field) else "")
            text = f"{_help(field)} ({note})" if _help(field) else f"({note})"
            lines += [pad + "# " + line for line in textwrap.wrap(text, wrap)]
            value = "  # REQUIRED" if default is REQUIRED else " " + render_value(default)
            lines.append(f"{pad}{key}:{value}")
            continue
        doc = field.description or _doc(sub)
        lines += [pad + "# " + line for line in textwrap.wrap(doc, wrap)]
        inner = default if isinstance(default, sub) else None
        body = _yaml_lines(sub, inner, indent + (4 if many else 2), width)
        if many:
            first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
            body[first] = pad + "  - " + body[first][indent + 4 :]
        block = [f"{pad}{key}:" + ("  # REQUIRED: one or more" if many and default is REQUIRED else "")] + body
        if default is None:  # an optional section, off by default: shown, commented out
            lines.append(f"{pad}# optional section, off when absent; uncomment to use:")
            block = [f"{pad}# {line[indent:]}" for line in block]
        elif many and default == []:  # an empty list by default: one entry shown, commented out
            lines.append(f"{pad}# empty by default ({key}: []); an entry looks like this:")
            block = [f"{pad}# {line[indent:]}" for line in block]
        lines += block
    return lines


def _default(field: FieldInfo, name: str, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, name)
    if field.is_required():
        return REQUIRED
    return field.get_default(call_default_factory=True)


def _help(field: FieldInfo) -> str:
    return " ".join((field.description or "").split())


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _plain_text(value: Any) -> str:
    return render_value(value) if not isinstance(value, str) else value


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)

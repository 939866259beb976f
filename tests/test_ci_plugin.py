"""tests/ci_plugin.py: with SCENIMEFY_CI=1 a skip fails the run and is named; without it, skips pass."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_xyz")


def test_never_collected():
    pass
"""

_TEST_SKIP = """
import pytest


def test_passes():
    pass


def test_skips_itself():
    pytest.skip("asked to skip")
"""


def _pytest(tmp_path, ci):
    (tmp_path / "test_module_skip.py").write_text(_MODULE_SKIP)
    (tmp_path / "test_run_skip.py").write_text(_TEST_SKIP)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's setup.cfg options
    env = {k: v for k, v in os.environ.items() if k != "SCENIMEFY_CI"}
    if ci:
        env["SCENIMEFY_CI"] = "1"
    env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.ci_plugin",
         "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_under_ci_every_skip_fails_the_run_and_is_named(tmp_path):
    proc = _pytest(tmp_path, ci=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout
    named = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED ")]
    assert len(named) == 2, proc.stdout
    assert "test_module_skip.py" in named[0] and "no_such_module_xyz" in named[0]
    assert "test_run_skip.py::test_skips_itself" in named[1] and "asked to skip" in named[1]


def test_without_ci_skips_pass(tmp_path):
    proc = _pytest(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout and "SKIPPED " not in proc.stdout

"""pytest plugin: under CI (`SCENIMEFY_CI=1`) a skipped test fails the session instead of passing quietly.

Most parity modules start with `torch = pytest.importorskip("torch")`, which is right on a laptop without
the `test` extra and wrong in CI, where a missing torch or transformers would turn every parity test into
a skip and the run green. With the variable set, every skip (a whole module at collection, or a test at
run time) is recorded, listed at the end of the run, and the exit status becomes 1 (tests failed).
An expected failure (`xfail`) ran and is not a skip.

Registered for the suite by `tests/conftest.py`; `-p tests.ci_plugin` loads it for any other test files.
"""
import os

import pytest


class _SkipsFailTheRun:
    def __init__(self):
        self.skips: list[tuple[str, str]] = []

    def _record(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skips.append((report.nodeid or str(report.fspath), reason))

    def pytest_collectreport(self, report):  # importorskip at module level skips the whole module here
        self._record(report)

    def pytest_runtest_logreport(self, report):
        self._record(report)

    def pytest_terminal_summary(self, terminalreporter):
        if self.skips:
            terminalreporter.section("skipped under SCENIMEFY_CI=1 (each one fails the run)", red=True)
            for nodeid, reason in self.skips:
                terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    if os.environ.get("SCENIMEFY_CI") == "1":
        config.pluginmanager.register(_SkipsFailTheRun(), "scenimefy_ci_skips")

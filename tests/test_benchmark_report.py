"""tools/benchmark_report.interleaved_median_ms: one call of each contender per round, medians per name."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import benchmark_report  # noqa: E402


def test_rounds_interleave_the_contenders_and_each_gets_its_own_median(monkeypatch):
    clock = [0.0]
    calls = []
    # Each contender's calls take the durations listed for it, in seconds (a fake clock, advanced by the call).
    durations = {"a": [0.003, 0.001, 0.002], "b": [0.010, 0.030, 0.020]}
    monkeypatch.setattr(benchmark_report.time, "perf_counter", lambda: clock[0])

    def contender(name):
        def call():
            calls.append(name)
            clock[0] += durations[name][sum(c == name for c in calls) - 1]
        return call

    got = benchmark_report.interleaved_median_ms({"a": contender("a"), "b": contender("b")}, 3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert abs(got["a"] - 2.0) < 1e-9 and abs(got["b"] - 20.0) < 1e-9

"""tools/benchmark_wgrad_gemm.py: one run writes the JSON it documents, and refuses a bad option."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "benchmark_wgrad_gemm.py"


def test_writes_one_row_per_shape_with_consistent_rates(tmp_path):
    out = tmp_path / "gemm.json"
    subprocess.run([sys.executable, str(TOOL), "--repeats", "1", "--output", str(out)],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    record = json.loads(out.read_text())
    assert {"date", "machine", "versions", "results"} <= set(record)
    rows = record["results"]
    assert [(r["K"], r["c_in"], r["c_out"]) for r in rows] == [
        (3072, 256, 256), (12288, 256, 256), (49152, 128, 64), (49152, 64, 128)]
    for r in rows:
        assert r["gflop"] == round(2.0 * r["K"] * r["c_in"] * r["c_out"] * 9 / 1e9, 3)
        for lib in ("xla", "numpy", "torch"):
            assert r[f"{lib}_ms"] > 0
            # GFLOP/s is the row's work over its time (both rounded in the file).
            assert abs(r[f"{lib}_gflop_per_s"] - r["gflop"] / r[f"{lib}_ms"] * 1e3) <= 0.1 + 1e-3 * r[f"{lib}_gflop_per_s"]


def test_bad_repeats_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--repeats", "0", "--output", str(tmp_path / "x.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "--repeats" in proc.stderr
    assert not (tmp_path / "x.json").exists()

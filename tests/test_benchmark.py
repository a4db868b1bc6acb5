"""benchmarks/latency.py runs end to end and writes the report users and CI read (its schema,
not its timings: speed is judged from the benchmark's own output, never in a unit test)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_shared

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"


@needs_shared
def test_quick_benchmark_writes_json_markdown_and_ratios(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("librosa")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeats", "3", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "latency.json").read_text())
    rows = report["rows"]
    for row in rows:
        assert {"backend", "precision", "fusion", "stage", "batch", "p50_ms", "p95_ms", "p99_ms"} <= set(row)
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    stages = {r["stage"] for r in rows if r["backend"].endswith("CPUExecutionProvider")}
    assert {"decode", "faces", "mfcc", "model", "total", "model-only"} <= stages
    assert any(r["backend"] == "torch-eager" for r in rows) and any(r["backend"] == "librosa" for r in rows)
    assert report["summary"]["model_speedup_vs_torch"] > 0 and report["summary"]["mfcc_speedup_vs_reference"] > 0
    assert "| backend |" in (tmp_path / "latency.md").read_text()

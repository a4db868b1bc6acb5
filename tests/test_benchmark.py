"""benchmarks/latency.py runs end to end and writes the report users and CI read (its schema,
not its timings: speed is judged from the benchmark's own output, never in a unit test)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"


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
    assert {"decode", "faces", "voice", "mfcc", "model", "total", "model-only"} <= stages
    assert any(r["backend"] == "torch-eager" for r in rows) and any(r["backend"] == "librosa" for r in rows)
    assert report["summary"]["model_speedup_vs_torch"] > 0 and report["summary"]["mfcc_speedup_vs_reference"] > 0
    # The footage's face turned 25 degrees: the roll is measured and both crops are timed.
    crops = {r["stage"]: r for r in rows if r["stage"].startswith("crop-")}
    assert set(crops) == {"crop-levelled", "crop-upright", "crop-detect"} and abs(crops["crop-levelled"]["roll_deg"]) > 15
    assert report["summary"]["tilted_crop_levelled_vs_upright"] > 0
    assert "| backend |" in (tmp_path / "latency.md").read_text()


def test_footage_is_camera_like_high_profile_with_b_frames_and_motion_in_every_frame(tmp_path, face, speech):
    """benchmarks/footage.py: the clip latency benchmarks decode must cost what real footage costs."""
    import importlib.util

    import av
    import numpy as np

    from mer.runtime.faces import FaceCropper
    from mer.runtime.spec import DEFAULT_SPEC

    spec = importlib.util.spec_from_file_location("footage", SCRIPT.parent / "footage.py")
    footage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(footage)
    path = footage.make_footage(tmp_path / "f.mp4", 1.2, face, speech)
    info = footage.probe(path, repeats=1)
    assert info["profile"] == "High" and (info["width"], info["height"]) == (1280, 720)
    assert info["fps"] == "30000/1001" and info["frame_types"].get("B", 0) >= 15
    assert info["audio"].startswith("aac") and 3 < info["video_bitrate_mbps"] < 12
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 36
    assert all(np.abs(a.astype(int) - b).mean() > 2 for a, b in zip(frames, frames[1:]))  # no still frame
    cropper = FaceCropper(DEFAULT_SPEC)
    try:
        assert all(len(cropper.detect(frames[i])) == 1 for i in (0, 17, 35))
    finally:
        cropper.close()


def test_gpu_latency_runs_its_code_path_on_the_cpu_and_writes_its_rows(tmp_path):
    """benchmarks/gpu_latency.py (figures from a GPU, in the README): its eager rows, ratios and
    report run anywhere; the CUDA-graph row needs a GPU and is absent on the CPU."""
    pytest.importorskip("torch")
    script = SCRIPT.with_name("gpu_latency.py")
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--repeats", "1", "--warmup", "0",
                           "--fusions", "lt", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_latency.json").read_text())["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(1, "fp32 eager"), (1, "fp16 eager"),
                                                          (8, "fp32 eager"), (8, "fp16 eager")]
    assert all(r["fusion"] == "lt" and r["face_px"] == 112 and r["p50_ms"] > 0 for r in rows)
    assert rows[0]["speedup_vs_fp32_eager"] == 1.0 and rows[1]["speedup_vs_fp32_eager"] > 0
    import torch

    if not torch.cuda.is_available():  # without a GPU it says so in one line instead of a traceback
        proc = subprocess.run([sys.executable, str(script), "--repeats", "1"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr

"""Latency of mer, stage by stage, against baselines run in the same process.

    python benchmarks/latency.py                 # all bundled fusions, fp32 + fp16, ~3 min on 2 cores
    python benchmarks/latency.py --quick         # ia only, fewer repeats, < 1 min
    python benchmarks/latency.py --clip my.mp4 --out results/
    python benchmarks/latency.py --quick --against old/ia.onnx   # the bundled ia's model time against another file

For every available backend x precision x fusion: per-stage latency of `Recognizer.predict`
(decode, faces, voice, mfcc, model, total) as p50/p95/p99 after warm-up, and model throughput at
batch 1 and batch 8. Baselines in the same run: PyTorch eager on the same weights (needs the
[train] extra) and librosa's MFCC (needs [dev]). Without --clip, a 4.3 s clip of real-cost footage
is encoded (benchmarks/footage.py: 720p H.264 High with B-frames, motion in every frame).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(samples_ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def timed(fn, repeats: int, warmup: int) -> list[float]:
    # One function has no other's leftovers to shed: a single block, no call dropped after warm-up.
    return timed_together({"fn": fn}, repeats, warmup, block=repeats + 1)["fn"]


def timed_together(fns: dict, repeats: int, warmup: int, block: int = 5) -> dict[str, list[float]]:
    """Per-call milliseconds of each function, `repeats` samples each, taken in alternating blocks
    (a a a a a, b b b b b, a ...) so that a ratio between them is not skewed by the machine
    drifting (this VM's speed wanders by tens of %). The first call of each block is dropped: it
    pays for the other function's leftovers (PyTorch's OpenMP threads spin on after a call)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(v) < repeats for v in out.values()):
        for name, fn in fns.items():
            fn()
            for _ in range(min(block - 1, repeats - len(out[name]))):
                t0 = time.perf_counter()
                fn()
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def make_clip(folder: Path) -> Path:
    """A 4.3 s clip that costs what real footage costs: 1280x720, 29.97 fps, H.264 High with
    B-frames, motion and texture in every frame, real face and speech (benchmarks/footage.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from footage import make_footage

    return make_footage(folder / "talking_face_720p.mp4", seconds=4.3)


def bench_mfcc(spec, audio: np.ndarray, repeats: int) -> list[dict]:
    from mer.runtime.mfcc import mfcc

    ours = lambda: mfcc(audio, spec)  # noqa: E731
    row = {"backend": "numpy", "precision": "fp32", "fusion": "-", "stage": "mfcc", "batch": 1}
    try:
        import librosa
    except ImportError:
        print("  (librosa not installed: no MFCC reference; pip install -e '.[dev]')")
        return [{**row, **percentiles(timed(ours, repeats, 5))}]
    ref = lambda: librosa.feature.mfcc(y=audio, sr=spec.sample_rate, n_mfcc=spec.n_mfcc, n_fft=spec.n_fft,  # noqa: E731
                                       win_length=spec.win_length, hop_length=spec.hop_length, n_mels=spec.n_mels,
                                       fmin=spec.fmin, fmax=spec.fmax)
    dev = float(np.abs(ref() - ours()).max() / np.abs(ref()).max())
    samples = timed_together({"ours": ours, "ref": ref}, repeats, 5)
    return [{**row, **percentiles(samples["ours"])},
            {**row, "backend": "librosa", "max_rel_dev": dev, **percentiles(samples["ref"])}]


def bench_tilted_crop(spec, frame: np.ndarray, repeats: int, tilt: float = 25.0) -> list[dict]:
    """One frame of the clip turned `tilt` degrees: the crop with its eyes levelled (the runtime's)
    against the upright crop it replaced, interleaved; detection beside them for scale."""
    from mer.runtime.faces import FaceCropper
    from mer.train.camera import tilted as turned

    tilted = turned(frame, tilt)
    levelled, upright = FaceCropper(spec), FaceCropper(spec, level=False)
    try:
        boxes = levelled.detect(tilted)
        if not boxes:
            print(f"  (no face in the clip's frame turned {tilt:g} degrees: no crop timing)")
            return []
        box = max(boxes, key=lambda b: b.w * b.h)
        samples = timed_together({"levelled": lambda: levelled.crop(tilted, box),
                                  "upright": lambda: upright.crop(tilted, box),
                                  "detect": lambda: levelled.detect(tilted)}, repeats, 5)
    finally:
        levelled.close(), upright.close()
    row = {"backend": "opencv", "precision": "uint8", "fusion": "-", "batch": 1, "roll_deg": round(box.roll, 1)}
    return [{**row, "stage": f"crop-{name}", **percentiles(v)} for name, v in samples.items()]


def model_vs_torch(fusion: str, model_path: Path, faces: np.ndarray, feats: np.ndarray, repeats: int) -> list[dict]:
    """ONNX Runtime (CPU, fp32, as mer-infer runs it) and PyTorch eager on the same weights,
    timed interleaved; both at batch 1 on every core."""
    from mer.runtime.backends import load_model

    try:
        import torch

        from mer.train import checkpoint as ckpt
    except ImportError:
        print("  (torch not installed: no PyTorch eager baseline; pip install -e '.[train]')")
        return []
    model = ckpt.bundled_or_untrained(fusion)[0].eval()
    torch.set_num_threads(os.cpu_count() or 1)
    f, m = faces[None], feats[None]
    ft, mt = torch.from_numpy(f), torch.from_numpy(m)
    ours = load_model(model_path, "cpu", None)
    with torch.inference_mode():
        samples = timed_together({"ort": lambda: ours.run(f, m), "torch": lambda: model(ft, mt)}, repeats, 3)
    backend = ours.backend_name
    row = {"precision": "fp32", "fusion": fusion, "stage": "model-only", "batch": 1}
    return [{"backend": backend, "baseline_for": "torch-eager", **row, **percentiles(samples["ort"])},
            {"backend": "torch-eager", **row, **percentiles(samples["torch"])}]


def model_vs_model(base: Path, other: Path, faces: np.ndarray, feats: np.ndarray, repeats: int) -> list[dict]:
    """Two ONNX files of the contract (the bundled model and another: an older one, a single model
    against an ensemble), ONNX Runtime CPU as mer-infer runs them, timed interleaved."""
    from mer.runtime.backends import load_model

    a, b = load_model(base, "cpu", None), load_model(other, "cpu", None)
    f, m = faces[None], feats[None]
    samples = timed_together({"base": lambda: a.run(f, m), "other": lambda: b.run(f, m)}, repeats, 3)
    row = {"backend": a.backend_name, "precision": "fp32", "stage": "model-only", "batch": 1}
    return [{**row, "fusion": base.stem, "model": str(base), **percentiles(samples["base"])},
            {**row, "fusion": other.stem, "model": str(other), "baseline_for": str(base), **percentiles(samples["other"])}]


def available_backends() -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    out = ["cpu"]
    if "CUDAExecutionProvider" in have:
        out.append("cuda")
    if "TensorrtExecutionProvider" in have:
        out.append("tensorrt")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, help="a talking-face clip (default: encode one from ../shared)")
    ap.add_argument("--quick", action="store_true", help="ia only, fewer repeats (< 1 min)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, help="write latency.json, latency.md and latency.png here")
    ap.add_argument("--against", type=Path, help="another ia ONNX file: its model time against the bundled ia's")
    args = ap.parse_args()
    if args.against and not args.against.is_file():
        sys.exit(f"latency.py: {args.against}: no such file")
    repeats = args.repeats or (8 if args.quick else 20)

    from mer.runtime import FUSIONS, Recognizer, bundled_model
    from mer.runtime.errors import ModelError
    from mer.runtime.recognizer import TIMINGS

    fusions = ["ia"] if args.quick else [f for f in FUSIONS if _exists(bundled_model, f, ModelError)]
    work = Path(tempfile.mkdtemp(prefix="mer-bench-"))
    clip = args.clip or make_clip(work)
    print(f"clip: {clip}  |  cores: {os.cpu_count()}  |  fusions: {', '.join(fusions)}")
    rows: list[dict] = []
    summary: dict[str, float] = {}
    for fusion in fusions:
        fp32 = bundled_model(fusion)
        variants = {"fp32": fp32}
        if not args.quick:
            variants["fp16"] = _fp16(fp32, work)
        for backend in available_backends():
            for precision, path in variants.items():
                if path is None:
                    continue
                with Recognizer(path, backend=backend) as rec:
                    stages: dict[str, list[float]] = {k: [] for k in TIMINGS}
                    for i in range(repeats + 2):
                        result = rec.predict(clip)
                        if i >= 2:  # warm-up: first calls build the detector and the session's caches
                            for k in stages:
                                stages[k].append(result.timings_ms[k])
                    for stage, samples in stages.items():
                        rows.append({"backend": result.model["backend"], "precision": precision, "fusion": fusion,
                                     "stage": stage, "batch": 1, **percentiles(samples)})
                    faces, feats = rec.inputs(clip)
                    run = lambda: rec._model.run(faces[None], feats[None])  # noqa: E731
                    model_row = {"backend": result.model["backend"], "precision": precision, "fusion": fusion,
                                 "stage": "model-only", "batch": 1, **percentiles(timed(run, repeats * 2, 3))}
                    rows.append(model_row)
                    for row in (rows[-2], model_row):  # end-to-end and model-only throughput, one clip at a time
                        row["clips_per_s"] = round(1e3 / row["p50_ms"], 2)
                print(f"  {fusion} {precision} {backend}: total p50 {rows[-2]['p50_ms']:.1f} ms, "
                      f"model p50 {model_row['p50_ms']:.1f} ms")
        pair = model_vs_torch(fusion, fp32, faces, feats, repeats * 2)
        if pair:
            rows.extend(pair)
            ours, base = pair
            summary[f"model_speedup_vs_torch_{fusion}"] = round(base["p50_ms"] / ours["p50_ms"], 2)
            print(f"  {fusion} torch eager: {base['p50_ms']:.1f} ms vs ONNX Runtime {ours['p50_ms']:.1f} ms "
                  f"(interleaved) -> {summary[f'model_speedup_vs_torch_{fusion}']}x faster")
        if args.against and fusion == "ia":
            pair = model_vs_model(fp32, args.against, faces, feats, repeats * 2)
            rows.extend(pair)
            summary["model_time_vs_against"] = round(pair[0]["p50_ms"] / pair[1]["p50_ms"], 2)
            print(f"  ia model {pair[0]['p50_ms']:.1f} ms vs {args.against} {pair[1]['p50_ms']:.1f} ms (interleaved): "
                  f"{summary['model_time_vs_against']}x its time")
        rows.extend(_batch_rows(fusion, faces, feats, work, repeats, args.quick))
    from mer.runtime.decode import decode_clip

    decoded = decode_clip(clip, rec.spec)  # once: its audio times the MFCC, its first frame the crop
    audio = decoded.audio
    if audio is None:
        sys.exit(f"latency.py: {clip} has no audio to time the MFCC on")
    mfcc_rows = bench_mfcc(rec.spec, audio, repeats * 5)
    rows.extend(mfcc_rows)
    if len(mfcc_rows) > 1:
        summary["mfcc_speedup_vs_reference"] = round(mfcc_rows[1]["p50_ms"] / mfcc_rows[0]["p50_ms"], 2)
        print(f"  MFCC: numpy {mfcc_rows[0]['p50_ms']:.2f} ms vs librosa {mfcc_rows[1]['p50_ms']:.2f} ms "
              f"({summary['mfcc_speedup_vs_reference']}x), max rel deviation {mfcc_rows[1]['max_rel_dev']:.1e}")
    crop_rows = bench_tilted_crop(rec.spec, decoded.frames[0], repeats * 5)
    if crop_rows:
        rows.extend(crop_rows)
        by = {r["stage"]: r["p50_ms"] for r in crop_rows}
        summary["tilted_crop_levelled_vs_upright"] = round(by["crop-levelled"] / by["crop-upright"], 2)
        print(f"  a face turned 25 degrees (roll measured {crop_rows[0]['roll_deg']}): crop levelled "
              f"{by['crop-levelled']:.2f} ms vs upright {by['crop-upright']:.2f} ms "
              f"({summary['tilted_crop_levelled_vs_upright']}x); detection {by['crop-detect']:.2f} ms")
    speedups = [v for k, v in summary.items() if k.startswith("model_speedup_vs_torch_")]
    if speedups:
        summary["model_speedup_vs_torch"] = float(min(speedups))
    report = {"clip": str(clip), "cores": os.cpu_count(), "rows": rows, "summary": summary}
    print(json.dumps(summary))
    if args.out:
        _write_reports(args.out, report)


def _exists(fn, fusion, error) -> bool:
    try:
        fn(fusion)
        return True
    except error:
        return False


def _fp16(fp32: Path, work: Path) -> Path | None:
    try:
        from mer.export.fp16 import convert_fp16
    except ImportError:
        return None
    return convert_fp16(fp32, work / f"{fp32.stem}.fp16.onnx")


def _batch_rows(fusion: str, faces, feats, work: Path, repeats: int, quick: bool) -> list[dict]:
    """Model throughput at batch 8 (needs torch to export a batch-8 graph)."""
    if quick:
        return []
    try:
        from mer.export.onnx_export import export_onnx
        from mer.train import checkpoint as ckpt
    except ImportError:
        return []
    import onnxruntime as ort

    model, spec, trained_on = ckpt.bundled_or_untrained(fusion)
    batch = 8
    path = export_onnx(model, spec, work / f"{fusion}.b{batch}.onnx", trained_on, batch=batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    f, m = np.repeat(faces[None], batch, 0), np.repeat(feats[None], batch, 0)
    samples = timed(lambda: session.run(None, {"faces": f, "mfcc": m}), max(3, repeats // 4), 1)
    row = {"backend": "onnxruntime:CPUExecutionProvider", "precision": "fp32", "fusion": fusion,
           "stage": "model-only", "batch": batch, **percentiles(samples)}
    row["clips_per_s"] = round(batch / (row["p50_ms"] / 1e3), 2)
    print(f"  {fusion} batch {batch}: {row['clips_per_s']} clips/s (model only)")
    return [row]


def _write_reports(out: Path, report: dict) -> None:
    from mer.runtime.recognizer import TIMINGS

    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(report, indent=1))
    lines = ["| backend | precision | fusion | stage | batch | p50 ms | p95 ms | p99 ms | clips/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['backend']} | {r['precision']} | {r['fusion']} | {r['stage']} | {r['batch']} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r.get('clips_per_s', '')} |")
    lines += ["", "Summary: " + ", ".join(f"{k} = {v}" for k, v in report["summary"].items())]
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib missing: no PNG chart)")
        return
    totals = [r for r in report["rows"] if r["stage"] in TIMINGS[:-1] and r["batch"] == 1
              and r["backend"].startswith("onnxruntime")]
    configs = sorted({(r["fusion"], r["precision"], r["backend"].split(":")[-1]) for r in totals})
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(configs) + 1.5))
    left = np.zeros(len(configs))
    for stage in TIMINGS[:-1]:  # the stages, "total" left out
        vals = [next(r["p50_ms"] for r in totals if (r["fusion"], r["precision"], r["backend"].split(":")[-1]) == c
                     and r["stage"] == stage) for c in configs]
        ax.barh([" ".join(c) for c in configs], vals, left=left, label=stage)
        left += np.array(vals)
    ax.set_xlabel("p50 latency per clip (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=120)


if __name__ == "__main__":
    main()

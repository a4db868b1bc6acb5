"""GPU latency of the bundled fusion models in PyTorch: the reference figure for an accelerator.

    python benchmarks/gpu_latency.py                     # on a CUDA machine, ~1 min
    python benchmarks/gpu_latency.py --out results/      # also writes gpu_latency.json
    python benchmarks/gpu_latency.py --device cpu --repeats 1 --warmup 0 --fusions lt   # the code path

Per fusion, batch 1 and 8, the model call alone (the face crops and MFCC already in device memory,
as a serving loop keeps them): FP32 eager (the baseline), FP16 eager (autocast), and FP16 replayed
from a CUDA graph (one launch for the whole model: at batch 1 a model this small is launch-bound).
Also the faithful recipe, the face trunk at 224 px instead of the shipped 112 px (the paper's
resolution; same weights, the graph's 2x average pooling dropped), to show what the 112 px choice
saves. Ratios are against FP32 eager of the same model in the same process. Needs the [train] extra.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

FUSIONS = ("ia", "it", "lt")


def _model(fusion: str, face_size: int | None, device: torch.device):
    from mer.train.checkpoint import bundled_checkpoint, load_checkpoint
    from mer.train.fusion import MerModel

    model, spec, _ = load_checkpoint(bundled_checkpoint(fusion))
    if face_size is not None and face_size != model.face_size:  # same weights, another trunk resolution
        config = {**model.config(), "face_size": face_size}
        other = MerModel(**config)
        other.load_state_dict(model.state_dict())
        model = other
    return model.to(device).eval(), spec


def _fp16(model, faces, mfcc):
    # cache_enabled=False: autocast's weight cache must not outlive a CUDA graph capture.
    with torch.autocast(faces.device.type, dtype=torch.float16, cache_enabled=False):
        return model(faces, mfcc)


def _graphed(model, faces, mfcc):
    """One CUDA graph of the FP16 forward on static inputs; replaying it is the whole model call."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            _fp16(model, faces, mfcc)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _fp16(model, faces, mfcc)
    return graph.replay, out


def _time(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()  # the call is done when the device is
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def _row(name: str, samples: list[float], base: float | None) -> dict:
    p50, p95 = np.percentile(samples, [50, 95])
    return {"variant": name, "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "speedup_vs_fp32_eager": round(base / float(p50), 2) if base else 1.0}


def bench(fusion: str, face_size: int | None, batch: int, device: torch.device, repeats: int,
          warmup: int = 10) -> list[dict]:
    from mer.export.onnx_export import example_inputs  # the inputs export traces with

    model, spec = _model(fusion, face_size, device)
    faces, mfcc = (t.to(device) for t in example_inputs(spec, batch))
    rows = []
    with torch.inference_mode():
        base = _time(lambda: model(faces, mfcc), device, repeats, warmup)
        rows.append(_row("fp32 eager", base, None))
        b50 = float(np.percentile(base, 50))
        rows.append(_row("fp16 eager", _time(lambda: _fp16(model, faces, mfcc), device, repeats, warmup), b50))
        if device.type == "cuda":
            replay, out = _graphed(model, faces, mfcc)
            replay()  # capture records the kernels without running them: `out` is filled by a replay
            torch.cuda.synchronize()
            ref = model(faces, mfcc).float().softmax(-1)
            diff = float((out.float().softmax(-1) - ref).abs().max())
            rows.append({**_row("fp16 CUDA graph", _time(replay, device, repeats, warmup), b50),
                         "max_prob_diff_vs_fp32": round(diff, 4)})
    face = face_size or model.face_size
    return [{"fusion": fusion, "face_px": face, "batch": batch, **r} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--fusions", default=",".join(FUSIONS), help="comma-separated, of ia, it, lt")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("gpu_latency: no CUDA device here (use --device cpu to run the code path)")
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    rows = []
    for fusion in args.fusions.split(","):
        for face_size in ((None, 224) if fusion == "ia" else (None,)):
            for batch in (1, 8):
                for r in bench(fusion, face_size, batch, device, args.repeats, args.warmup):
                    rows.append(r)
                    extra = f"  max |dp| vs fp32 {r['max_prob_diff_vs_fp32']}" if "max_prob_diff_vs_fp32" in r else ""
                    print(f"{r['fusion']} {r['face_px']:>3} px  batch {r['batch']}  {r['variant']:<16} "
                          f"p50 {r['p50_ms']:7.3f} ms  p95 {r['p95_ms']:7.3f} ms  "
                          f"x{r['speedup_vs_fp32_eager']:.2f} vs fp32 eager{extra}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_latency.json").write_text(json.dumps({"device": str(device), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""How close the model time comes to this CPU's floor.

    python benchmarks/floor.py [--fusion ia]

Counts the model's multiply-adds per clip (forward hooks on every Conv/Linear and the attention
products, in PyTorch), measures the CPU's sustained float32 peak with a large matrix product
(NumPy/BLAS, all cores), and compares the floor 2 * MACs / peak with the ONNX Runtime model time.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def count_macs(model, faces, mfcc) -> int:
    import torch


    total = 0

    def conv_hook(mod, inp, out):
        nonlocal total
        k = int(np.prod(mod.kernel_size)) * (mod.in_channels // mod.groups)
        total += out.numel() * k

    def linear_hook(mod, inp, out):
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d)):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(faces, mfcc)
    for h in handles:
        h.remove()
    return total


def cpu_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fusion", default="ia")
    args = ap.parse_args()
    import onnxruntime as ort

    from mer.export.onnx_export import example_inputs
    from mer.runtime import bundled_model
    from mer.train import checkpoint as ckpt

    model, spec, _ = ckpt.bundled_or_untrained(args.fusion)
    faces, mfcc = example_inputs(spec)
    macs = count_macs(model.eval(), faces, mfcc)
    peak = cpu_peak_gflops()
    floor_ms = 2 * macs / (peak * 1e9) * 1e3
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(bundled_model(args.fusion)), opts, providers=["CPUExecutionProvider"])
    feed = {"faces": faces.numpy(), "mfcc": mfcc.numpy()}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    ort_ms = float(np.median(times))
    print(f"{args.fusion}: {macs / 1e6:.0f} M multiply-adds per clip (face trunk at {model.face_size} px)")
    print(f"CPU float32 peak (BLAS {2048}^3 matmul, {os.cpu_count()} cores): {peak:.1f} GFLOP/s")
    print(f"floor 2*MACs/peak = {floor_ms:.2f} ms; ONNX Runtime p50 = {ort_ms:.2f} ms "
          f"({100 * floor_ms / ort_ms:.0f} % of peak)")


if __name__ == "__main__":
    main()

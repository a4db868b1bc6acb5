"""mer-batch (Ray Data) against mer-infer on the same folder of real-cost clips: wall time, clips/s,
mer-batch's overhead, and the labels of both (which must be equal).

    python benchmarks/batch.py                          # 8 clips of 4 s, 3 rounds: ~3 min on 2 cores
    python benchmarks/batch.py --clips 8 --sizes 8,24   # also 24 files (the 8 clips hard-linked 3x)
    python benchmarks/batch.py --cluster                # also mer-batch on a running Ray (--address)
    python benchmarks/batch.py --out results/           # also batch.json

Clips are made once by benchmarks/footage.py (1280x720 H.264 High, B-frames, 8 Mb/s, speech),
each with its own face and utterance when ../shared is there (so the labels differ), else the
committed fixtures with different seeds. Every run is a new process, as a user runs it, start-up
included, rounds interleaved (mer-infer, mer-batch, mer-batch --address); medians are reported:

    mer-infer DIR --out X.jsonl                          (one process, the engine on all cores)
    mer-batch DIR --out D/ --num-cpus C                  (a local Ray started and shut down by it)
    mer-batch DIR --out D/ --address auto                (--cluster: a Ray started beforehand with
                                                          `ray start --head --block`, as on a cluster)

Overhead = (mer-batch wall - mer-infer wall) / mer-infer wall. With two --sizes, each tool's
marginal time per file (the slope) and fixed cost (the intercept) are also printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
BIN = Path(sys.executable).parent


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    from footage import load_face, load_speech, make_footage, shared_dir

    folder.mkdir(parents=True, exist_ok=True)
    faces = sorted((shared_dir() / "data/faces/tfeid/images").glob("0111[a-g]0[1-3].jpg"))
    speech = sorted((shared_dir() / "data/ravdess_speech_16k/Actor_03").glob("03-01-0?-02-01-01-03.flac"))
    clips = []
    for i in range(n):
        path = folder / f"clip{i:03d}.mp4"
        if not path.exists():
            face = load_face(faces[(i * 3) % len(faces)]) if faces else None
            wave = load_speech(speech[i % len(speech)]) if speech else None
            t0 = time.perf_counter()
            make_footage(path, seconds=seconds, face=face, speech=wave, seed=i)
            print(f"  encoded {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        clips.append(path)
    return clips


def file_set(root: Path, clips: list[Path], size: int) -> Path:
    """A folder of `size` files: the clips, hard-linked again as many times as needed."""
    folder = root / f"set{size}"
    if not folder.exists():
        folder.mkdir()
        for k in range(size):
            src = clips[k % len(clips)]
            os.link(src, folder / f"{k // len(clips)}_{src.name}")
    return folder


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc


def labels(path: Path) -> dict[str, str]:
    return {r["file"]: r["label"] for r in map(json.loads, path.read_text().splitlines()) if "label" in r}


def start_cluster(cpus: int, port: int) -> subprocess.Popen:
    """`ray start --head --block` on this machine (stopped by SIGTERM at the end)."""
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={cpus}",
                             f"--port={port}", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)  # `auto` finds the newest Ray started here: this one, once it has written its address
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(address='auto', log_to_driver=False)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return head
        time.sleep(1)
    stop_cluster(head)
    raise SystemExit("ray start --head did not come up in 120 s")


def stop_cluster(head: subprocess.Popen) -> None:
    """`ray start --block` stops its processes on SIGTERM, or else on SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        head.send_signal(sig)
        try:
            head.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue
    head.kill()
    head.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="distinct clips to encode")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    ap.add_argument("--sizes", default=None, help="files per run, comma-separated (default: --clips)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the Ray (local or --cluster)")
    ap.add_argument("--cluster", action="store_true", help="also mer-batch --address on a running Ray")
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "mer-batch-bench"),
                    help="where clips are kept between runs")
    ap.add_argument("--out", help="write batch.json here")
    args = ap.parse_args()

    root = Path(args.dir)
    clips = make_clips(root / "clips", args.clips, args.seconds)
    sizes = [int(s) for s in (args.sizes or str(args.clips)).split(",")]
    sets = {n: file_set(root, clips, n) for n in sizes}
    work = Path(tempfile.mkdtemp(prefix="runs-", dir=root))
    infer = lambda src, out: [str(BIN / "mer-infer"), str(src), "--out", str(out / "infer.jsonl")]  # noqa: E731
    local = lambda src, out: [str(BIN / "mer-batch"), str(src), "--out", str(out / "batch"),  # noqa: E731
                              "--num-cpus", str(args.cpus)]
    remote = lambda src, out: [str(BIN / "mer-batch"), str(src), "--out", str(out / "batch"),  # noqa: E731
                               "--address", "auto"]
    # Phase 1 interleaves mer-infer with mer-batch on a local Ray; phase 2 (--cluster) runs with a
    # Ray head up (its idle processes cost a little CPU), so mer-infer is measured again there.
    phases = [{"mer-infer": infer, "mer-batch": local}]
    if args.cluster:
        phases.append({"mer-infer (Ray head up)": infer, "mer-batch --address": remote})
    walls: dict[tuple[str, int], list[float]] = {}
    try:
        for phase in phases:
            head = start_cluster(args.cpus, args.port) if "mer-batch --address" in phase else None
            try:
                for r in range(args.rounds):
                    for n, src in sets.items():
                        reference = None
                        for tool, cmd in phase.items():
                            out = work / f"r{r}-{n}-{''.join(c for c in tool if c.isalnum())}"
                            out.mkdir()
                            wall, proc = timed(cmd(src, out))
                            walls.setdefault((tool, n), []).append(wall)
                            if tool.startswith("mer-infer"):
                                reference = labels(out / "infer.jsonl")
                            else:
                                found = labels(out / "batch" / "results.jsonl")
                                if found != reference:
                                    diff = {f: (reference.get(f), found.get(f)) for f in set(reference) | set(found)
                                            if reference.get(f) != found.get(f)}
                                    raise SystemExit(f"{tool}: labels differ from mer-infer's: {diff}")
                            print(f"round {r + 1}: {tool:<25} {n:>3} files  {wall:6.2f} s  {n / wall:5.2f} clips/s  "
                                  f"labels {'(reference)' if tool.startswith('mer-infer') else '= mer-infer'}", flush=True)
            finally:
                if head is not None:
                    stop_cluster(head)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {args.rounds} rounds, {args.clips} clips of {args.seconds:g} s 720p H.264, "
          f"{args.cpus} CPUs ({os.cpu_count()} on the machine); labels equal in every run")
    report = {"cpus": args.cpus, "clips": args.clips, "seconds": args.seconds, "rounds": args.rounds, "runs": []}
    for phase in phases:
        for n in sizes:
            base = statistics.median(walls[(next(iter(phase)), n)])
            for tool in phase:
                wall = statistics.median(walls[(tool, n)])
                over = None if tool.startswith("mer-infer") else 100 * (wall - base) / base
                note = "" if over is None else f"  overhead {over:+5.0f} %"
                print(f"  {tool:<25} {n:>3} files  wall {wall:6.2f} s  {n / wall:5.2f} clips/s{note}")
                report["runs"].append({"tool": tool, "files": n, "wall_s": round(wall, 2),
                                       "clips_per_s": round(n / wall, 3), "walls_s": [round(w, 2) for w in walls[(tool, n)]],
                                       "overhead_pct": None if over is None else round(over, 1)})
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        print(f"\n  per file (slope {lo}->{hi} files) and fixed cost (intercept), medians:")
        for tool in (t for phase in phases for t in phase):
            a, b = statistics.median(walls[(tool, lo)]), statistics.median(walls[(tool, hi)])
            slope = (b - a) / (hi - lo)
            print(f"  {tool:<25} {slope:5.3f} s/file ({1 / slope:4.2f} clips/s)  fixed {a - slope * lo:5.2f} s")
            report.setdefault("marginal", {})[tool] = {"s_per_file": round(slope, 3), "fixed_s": round(a - slope * lo, 2)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "batch.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

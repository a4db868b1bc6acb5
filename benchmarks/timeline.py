"""Emotion over time, measured: timeline speed, live latency and memory on real-cost footage.

    python benchmarks/timeline.py                     # 40 s 720p footage, ~3 min on 2 cores
    python benchmarks/timeline.py --clip talk.mp4     # your own recording
    python benchmarks/timeline.py --quick             # 12 s footage, no 10-minute memory run
    python benchmarks/timeline.py --out results/      # also timeline.json and timeline.md

Without --clip, footage is encoded by benchmarks/footage.py: 1280x720, 29.97 fps, H.264 High with
B-frames at ~10 Mb/s, a real face and real speech with motion and texture in every frame (a still
face decodes ~3x faster than a camera's recording and would flatter the decoder).

What it reports, each against a baseline run in the same process where there is one:
- timeline: `mer-infer FILE --timeline --json` as a new process (start-up included), seconds and
  times faster than real time; in-process, the engine against the naive way (one `predict` per
  window: each window decoded, searched and analysed alone), same windows, same run: the ratio;
- live: the same file paced as a camera (`--live FILE --realtime --hop 1`): windows emitted of
  those planned, `latency_ms` p50/p95/max;
- memory: peak RSS of the timeline of the footage looped to 10 minutes (remuxed, no re-encode)
  against the same for the footage alone: nothing may grow with duration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def footage(folder: Path, seconds: float) -> Path:
    from footage import make_footage

    path = folder / f"footage_{seconds:g}s.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        make_footage(path, seconds=seconds)
        print(f"  encoded {path.name} in {time.perf_counter() - t0:.0f} s")
    return path


def looped(src: Path, times: int, out: Path) -> Path:
    """`src` played `times` times in a row, remuxed (packets copied with shifted timestamps)."""
    import av

    if out.exists():
        return out
    with av.open(str(src)) as probe:
        duration = Fraction(probe.duration, av.time_base)
    with av.open(str(out), "w") as dst:
        streams = {}
        with av.open(str(src)) as first:
            for s in first.streams:
                if s.type in ("video", "audio"):
                    streams[s.index] = dst.add_stream_from_template(s)
        for k in range(times):
            with av.open(str(src)) as inp:
                for packet in inp.demux():
                    if packet.dts is None or packet.stream.index not in streams:
                        continue
                    shift = int(duration * k / packet.time_base)
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts += shift
                    packet.stream = streams[packet.stream.index]
                    dst.mux(packet)
    return out


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a command, measured in a fresh helper process."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    kb, wall = out.stdout.split()
    return int(kb) / 1024, float(wall)


def mer_infer(*args: str) -> list[str]:
    return [sys.executable, "-m", "mer.runtime.cli", *args]


def timed_cli(cmd: list[str], runs: int) -> tuple[list[float], str]:
    walls, stdout = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        stdout = proc.stdout
    return walls, stdout


def engine_vs_naive(clip: Path, repeats: int) -> dict:
    """The engine's timeline against one predict per window, same windows, alternating, one process."""
    from mer.runtime import Recognizer
    from mer.runtime import window as windows
    from mer.runtime.engine import window_inputs
    from mer.runtime.source import MediaSource

    with Recognizer() as rec:
        def engine():
            return [r.label for r in rec.timeline(clip)]

        def naive():
            labels = []
            with MediaSource(clip, rec.spec) as probe:
                plan = windows.timeline(probe.info.duration, rec.spec, windows.default_hop(rec.spec))
            for w in plan:  # what `predict` does for its one window, once per window
                with MediaSource(clip, rec.spec) as src:
                    item = next(window_inputs(src.events([w], seek=True, stop_when_covered=True), src.info, [w],
                                              rec.spec, lambda: rec.cropper, share_mfcc=False))
                labels.append(rec._results([item], str(clip))[0].label)
            return labels

        engine()  # warm-up: detector, session
        times = {"engine": [], "naive": []}
        agree = []
        for _ in range(repeats):
            for name, fn in (("engine", engine), ("naive", naive)):
                t0 = time.perf_counter()
                labels = fn()
                times[name].append(time.perf_counter() - t0)
                agree.append(labels)
        a, b = agree[-2], agree[-1]
        return {"engine_s": round(float(np.median(times["engine"])), 3),
                "naive_s": round(float(np.median(times["naive"])), 3),
                "speedup_vs_naive": round(float(np.median(times["naive"]) / np.median(times["engine"])), 2),
                "windows": len(a), "label_agreement_with_naive": round(float(np.mean([x == y for x, y in zip(a, b)])), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, help="a talking-face recording (default: encode real-cost footage)")
    ap.add_argument("--quick", action="store_true", help="12 s footage, one run each, no 10-minute memory run")
    ap.add_argument("--out", type=Path, help="write timeline.json and timeline.md here")
    args = ap.parse_args()

    work = Path(os.environ.get("MER_BENCH_CACHE", Path(tempfile.gettempdir()) / "mer-bench"))
    work.mkdir(parents=True, exist_ok=True)
    clip = args.clip or footage(work, 12.0 if args.quick else 40.0)
    import av

    with av.open(str(clip)) as c:
        duration = c.duration / av.time_base
    print(f"clip: {clip} ({duration:.1f} s)  |  cores: {os.cpu_count()}")
    report: dict = {"clip": str(clip), "duration_s": round(duration, 2), "cores": os.cpu_count()}

    runs = 1 if args.quick else 3
    walls, stdout = timed_cli(mer_infer(str(clip), "--timeline", "--json"), runs)
    n = len(stdout.splitlines())
    wall = float(np.median(walls))
    report["timeline_cli"] = {"wall_s": round(wall, 2), "walls_s": [round(w, 2) for w in walls], "windows": n,
                              "x_real_time": round(duration / wall, 2)}
    print(f"  timeline (new process, start-up included): {wall:.2f} s for {duration:.1f} s "
          f"-> {duration / wall:.1f}x real time, {n} windows")

    report["timeline_engine_vs_naive"] = cmp = engine_vs_naive(clip, 1 if args.quick else 2)
    print(f"  in-process: engine {cmp['engine_s']} s vs one predict per window {cmp['naive_s']} s "
          f"-> {cmp['speedup_vs_naive']}x; labels agree on {cmp['label_agreement_with_naive']:.0%}")

    proc = subprocess.run(mer_infer("--live", str(clip), "--realtime", "--hop", "1", "--json"),
                          capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    from mer.runtime import window as windows
    from mer.runtime.spec import DEFAULT_SPEC

    planned = len(windows.timeline(duration, DEFAULT_SPEC, 1.0))
    lat = np.array([r["latency_ms"] for r in records])
    report["live"] = {"hop_s": 1.0, "emitted": len(records), "planned": planned,
                      "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
                      "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
                      "latency_ms_max": round(float(lat.max()), 1),
                      "skipped_warnings": sum(any("skipped" in w for w in r["warnings"]) for r in records)}
    live = report["live"]
    print(f"  live (paced, hop 1 s): {live['emitted']}/{planned} windows, latency p50 {live['latency_ms_p50']} ms, "
          f"p95 {live['latency_ms_p95']} ms, max {live['latency_ms_max']} ms")

    if not args.quick:
        long = looped(clip, max(1, round(600 / duration)), work / f"{clip.stem}_10min.mp4")
        short_rss, _ = peak_rss_mb(mer_infer(str(clip), "--timeline", "--json"))
        long_rss, long_wall = peak_rss_mb(mer_infer(str(long), "--timeline", "--json"))
        with av.open(str(long)) as c:
            long_duration = c.duration / av.time_base
        report["memory"] = {"peak_rss_mb_short": round(short_rss), "peak_rss_mb_10min": round(long_rss),
                            "duration_10min_s": round(long_duration, 1), "wall_10min_s": round(long_wall, 1)}
        print(f"  memory: peak RSS {short_rss:.0f} MB for {duration:.0f} s, {long_rss:.0f} MB for "
              f"{long_duration / 60:.1f} min ({long_wall:.0f} s wall)")
    print(json.dumps(report))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "timeline.json").write_text(json.dumps(report, indent=1))
        lines = [f"# Emotion over time on {Path(report['clip']).name} ({report['duration_s']} s, {report['cores']} cores)",
                 "", "| measure | value |", "|---|---|"]
        for section, values in report.items():
            if isinstance(values, dict):
                lines += [f"| {section}.{k} | {v} |" for k, v in values.items()]
        (args.out / "timeline.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

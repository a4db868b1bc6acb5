"""Load and faults against a real `mer-serve` on loopback (bounded: it stops by itself).

    python benchmarks/serve_load.py                    # 1,000 requests at concurrency 1, 4 and 16
    python benchmarks/serve_load.py --requests 100     # a shorter run
    python benchmarks/serve_load.py --out results/     # also serve_load.json

The clip is real-cost 720p footage (benchmarks/footage.py, 4.3 s). For each concurrency: status
counts, p50/p95/p99 latency, throughput, and the server's RSS before and after. Then the faults:
a slow client (10 KB/s upload) while others are served; a client that disconnects mid-upload (no
temporary file left); a worker process killed mid-request (uvicorn replaces it, the next
request succeeds). Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mer.runtime.serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("serve_load.py: the server did not become healthy in 120 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (uvicorn's workers), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def load(base: str, data: bytes, n: int, concurrency: int) -> dict:
    import httpx

    client = httpx.Client(timeout=60)
    latencies, codes = [], []
    lock = threading.Lock()

    def one(_):
        t0 = time.perf_counter()
        try:
            code = client.post(f"{base}/v1/recognize", content=data).status_code
        except httpx.HTTPError:
            code = 0
        with lock:
            latencies.append(time.perf_counter() - t0)
            codes.append(code)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    ok = [lat for lat, c in zip(latencies, codes) if c == 200]
    refused = [lat for lat, c in zip(latencies, codes) if c == 503]
    row = {"concurrency": concurrency, "requests": n, "wall_s": round(wall, 1),
           "status": {str(c): codes.count(c) for c in sorted(set(codes))},
           "ok_per_s": round(len(ok) / wall, 2)}
    for name, values in (("ok", ok), ("503", refused)):
        if values:
            p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1e3
            row[f"{name}_ms"] = {"p50": round(p50), "p95": round(p95), "p99": round(p99)}
    return row


def faults(data: bytes, model_args: list[str]) -> dict:
    import httpx

    out = {}
    proc, base = start(["--threads", "2", "--queue", "2", *model_args])
    try:
        # A slow client uploads at ~10 KB/s; fast clients meanwhile.
        port = int(base.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data))
        stop_slow = threading.Event()

        def trickle():
            sent = 0
            while not stop_slow.is_set() and sent < len(data):
                slow.sendall(data[sent:sent + 1000])
                sent += 1000
                time.sleep(0.1)

        threading.Thread(target=trickle, daemon=True).start()
        fast = []
        for _ in range(5):
            t0 = time.perf_counter()
            code = httpx.post(f"{base}/v1/recognize", content=data, timeout=60).status_code
            fast.append((code, round((time.perf_counter() - t0) * 1e3)))
        stop_slow.set()
        slow.close()
        out["slow_client"] = {"fast_requests_meanwhile": fast}
        # A client that disconnects mid-upload.
        before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mer-upload-*")))
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n" + data[:200_000])
        time.sleep(1.5)
        left = set(glob.glob(os.path.join(tempfile.gettempdir(), "mer-upload-*"))) - before
        out["disconnect_mid_upload"] = {"temporary_files_left": len(left)}
    finally:
        stop(proc)
    # A worker process killed mid-request.
    proc, base = start(["--workers", "2", *model_args])
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        workers = [c for c in children if "mer.runtime.serve" in Path(f"/proc/{c}/cmdline").read_text()
                   or "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text()]
        results = []

        def doomed():
            try:
                results.append(httpx.post(f"{base}/v1/recognize?timeline=true&hop=0.25", content=data,
                                          timeout=60).status_code)
            except httpx.HTTPError as exc:
                results.append(type(exc).__name__)

        threads = [threading.Thread(target=doomed) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.4)
        victim = workers[0] if workers else None
        if victim:
            os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join()
        time.sleep(3.0)
        after = httpx.post(f"{base}/v1/recognize", content=data, timeout=60).status_code
        out["worker_killed"] = {"killed_pid": victim, "in_flight_results": results, "next_request": after}
    finally:
        stop(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--model", help="model file for the server (default: bundled)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(os.environ.get("MER_BENCH_CACHE", Path(tempfile.gettempdir()) / "mer-bench"))
    work.mkdir(parents=True, exist_ok=True)
    if args.clip is None:
        from footage import make_footage

        args.clip = work / "serve_720p.mp4"
        if not args.clip.exists():
            make_footage(args.clip, seconds=4.3)
    data = args.clip.read_bytes()
    model_args = ["--model", args.model] if args.model else []
    report: dict = {"clip": str(args.clip), "cores": os.cpu_count(), "levels": []}
    proc, base = start(["--threads", "2", "--queue", "2", *model_args])
    try:
        for concurrency in (1, 4, 16):
            rss0 = tree_rss_mb(proc.pid)
            row = load(base, data, args.requests, concurrency)
            row["rss_mb_before_after"] = [round(rss0), round(tree_rss_mb(proc.pid))]
            report["levels"].append(row)
            print(json.dumps(row))
    finally:
        stop(proc)
    report["faults"] = faults(data, model_args)
    print(json.dumps(report["faults"]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serve_load.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

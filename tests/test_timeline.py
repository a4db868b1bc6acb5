"""Emotion over time: windows, the timeline, live sources and folders, on real encoded clips."""
from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mer.runtime import window as windows
from mer.runtime.spec import DEFAULT_SPEC as SPEC

from media import write_archive
from test_cli import RECORD_KEYS, assert_clean_stderr, error_lines, run_cli


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mer.runtime.cli", *map(str, args)]


# -- the window, defined once ------------------------------------------------------------------
def test_timeline_windows_start_at_zero_step_by_the_hop_and_end_at_the_end():
    plan = windows.timeline(40.0, SPEC, 0.96)
    assert plan[0] == windows.Window(0.0, 3.6)
    assert all(b.start - a.start == pytest.approx(0.96) for a, b in zip(plan[:-2], plan[1:-1]))
    assert plan[-1].end == pytest.approx(40.0)
    assert windows.timeline(2.0, SPEC, 1.0) == [windows.Window(0.0, 3.6)]
    assert windows.default_hop(SPEC) == pytest.approx(0.96)  # 4 face samples: windows share frames
    # Audio windows sit on the STFT hop grid, within half a hop of the video window.
    for w in plan:
        first = windows.audio_start(w, SPEC)
        assert first % SPEC.hop_length == 0 and abs(first / SPEC.sample_rate - w.start) <= SPEC.hop_length / 2 / 16000


@pytest.fixture(scope="module")
def long_clip(clip_factory):
    return clip_factory("twelve.mp4", seconds=12.0, size=(640, 360))


def test_timeline_equals_each_window_analysed_alone(recognizer, long_clip):
    """The shared buffers (frames searched once, STFT frames reused) change nothing: each timeline
    window gives what that window gives when decoded on its own."""
    from mer.runtime.engine import model_inputs, window_inputs
    from mer.runtime.source import MediaSource

    results = list(recognizer.timeline(long_clip))
    plan = windows.timeline(12.0, SPEC, windows.default_hop(SPEC))
    assert [tuple(r.window) for r in results] == [(w.start, w.end) for w in plan]
    for k in (0, 5, len(plan) - 1):
        with MediaSource(long_clip, SPEC) as src:
            alone = next(window_inputs(src.events([plan[k]], seek=True, stop_when_covered=True), src.info,
                                       [plan[k]], SPEC, lambda: recognizer.cropper, share_mfcc=False))
        faces, feats = model_inputs(alone, SPEC)
        single = recognizer._results([alone], None)[0]
        assert results[k].label == single.label
        assert max(abs(results[k].probabilities[n] - single.probabilities[n]) for n in single.probabilities) < 1e-4
        assert results[k].faces_detected == alone.faces_detected == 15 and faces.any() and feats.any()


def test_overlapping_windows_search_each_frame_once(recognizer, long_clip, monkeypatch):
    searched = []
    detect = type(recognizer.cropper).detect
    monkeypatch.setattr(type(recognizer.cropper), "detect", lambda self, rgb: searched.append(1) or detect(self, rgb))
    results = list(recognizer.timeline(long_clip))
    # 12 s at one sample per 0.24 s is 50 distinct frames (plus the end-aligned last window's 15),
    # where one search per window sample would be 15 per window.
    assert len(searched) <= 50 + 15 < 15 * len(results)


def test_a_short_clip_timeline_is_the_single_prediction(recognizer, clip_factory):
    clip = clip_factory("short_tl.mp4", seconds=2.0)
    (only,) = list(recognizer.timeline(clip))
    single = recognizer.predict(clip)
    assert only.window == single.window == (0.0, 3.6)
    assert only.probabilities == pytest.approx(single.probabilities, abs=1e-6)


def test_cli_timeline_table_csv_and_plot(exported, long_clip, tmp_path):
    csv_path, png = tmp_path / "w.csv", tmp_path / "t.png"
    proc = run_cli(long_clip, "--timeline", "--model", exported("ia"), "--csv", csv_path, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc)
    assert "START" in proc.stdout and "LABEL" in proc.stdout and "windows" in proc.stdout
    rows = csv_path.read_text().splitlines()
    n = len(windows.timeline(12.0, SPEC, windows.default_hop(SPEC)))
    assert len(rows) == n + 1 and rows[0].startswith("file,start,end,label,confidence,p_neutral")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    proc = run_cli(long_clip, "--timeline", "--hop", "2", "--json", "--model", exported("ia"))
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["window"][0] for r in records] == pytest.approx([0, 2, 4, 6, 8, 8.4])
    assert all(RECORD_KEYS <= set(r) for r in records) and records[-1]["window"][1] == pytest.approx(12.0)


def test_segments_merge_windows_and_tile_the_recording():
    from mer.runtime.report import segments

    def rec(start, label, p):
        probs = {"happy": 0.0, "sad": 0.0, "angry": 0.0}
        probs[label] = p
        return {"window": [start, start + 3.6], "label": label, "probabilities": probs}

    segs = segments([rec(0, "happy", 0.8), rec(1, "happy", 0.6), rec(2, "sad", 0.9), rec(3, "happy", 0.7)], 6.6)
    assert [(s.label, s.windows) for s in segs] == [("happy", 2), ("sad", 1), ("happy", 1)]
    assert segs[0].start == 0 and segs[-1].end == 6.6
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    assert segs[0].confidence == pytest.approx(0.7)


# -- live ----------------------------------------------------------------------------------------
def test_live_paced_file_emits_every_window_soon_after_its_last_sample(exported, clip_factory):
    clip = clip_factory("live6.mp4", seconds=6.0, size=(640, 360))
    t0 = time.perf_counter()
    proc = run_cli("--live", clip, "--realtime", "--hop", "1", "--json", "--model", exported("ia"))
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["window"][0] for r in records] == pytest.approx([0, 1, 2, 2.4])
    assert all(0 <= r["latency_ms"] < 1000 for r in records), [r["latency_ms"] for r in records]
    assert wall > 5.5  # paced: a 6 s file takes its own 6 s


def test_live_skips_windows_when_the_consumer_falls_behind(recognizer, clip_factory):
    clip = clip_factory("live10.mp4", seconds=10.0, size=(640, 360))
    out = []
    for result in recognizer.live(str(clip), hop=0.5, realtime=True):
        out.append(result)
        if len(out) == 1:
            time.sleep(3.0)  # a machine that cannot keep up for a while
    starts = [r.window[0] for r in out]
    assert any("skipped" in w for r in out for w in r.warnings), [r.warnings for r in out]
    assert len(starts) < len(windows.timeline(10.0, SPEC, 0.5))
    assert starts == sorted(starts)


def test_live_from_stdin_and_over_http(exported, clip_factory, tmp_path):
    mkv = clip_factory("stream.mkv", seconds=5.0, size=(320, 240))
    with open(mkv, "rb") as stdin:
        proc = subprocess.run(cli("--live", "-", "--json", "--model", exported("ia")), stdin=stdin,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    piped = [json.loads(line) for line in proc.stdout.splitlines()]
    assert piped and all("latency_ms" in r for r in piped)

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(mkv.parent), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{mkv.name}"
        proc = run_cli("--live", url, "--json", "--model", exported("ia"))
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["label"] for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("kind", ["file", "camera"])
def test_a_live_source_that_cannot_open_is_one_line_and_no_table(exported, tmp_path, kind):
    """A live source that cannot open (a file that is not there, a camera device that is not): its
    error alone, exit 1, and no table header on stdout for a table that never comes."""
    missing = str(tmp_path / "gone.mp4") if kind == "file" else "/dev/video99"
    if Path(missing).exists():
        pytest.skip(f"{missing} exists on this machine")
    proc = run_cli("--live", missing, "--model", exported("ia"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert_clean_stderr(proc)
    assert len(error_lines(proc)) == 1 and missing in error_lines(proc)[0]


def test_a_live_stream_that_ends_before_its_first_window_says_so(exported, clip_factory):
    """A pipe of 1 s of video (less than a window) that closes: one error line and exit 1, not a silent exit 0."""
    short = clip_factory("short.mkv", seconds=1.0, size=(320, 240), audio=False)
    with open(short, "rb") as stdin:
        proc = subprocess.run(cli("--live", "-", "--model", exported("ia")), stdin=stdin,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert_clean_stderr(proc)
    assert len(error_lines(proc)) == 1 and "ended before its first window" in error_lines(proc)[0]


def test_ctrl_c_ends_live_cleanly(exported, clip_factory):
    clip = clip_factory("live20.mp4", seconds=20.0, size=(320, 240))
    proc = subprocess.Popen(cli("--live", clip, "--realtime", "--json", "--model", exported("ia")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(7.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert 1 <= len(lines) < 18 and all(json.loads(line)["label"] for line in lines)


# -- folders ---------------------------------------------------------------------------------
@pytest.fixture()
def folder(tmp_path, clip_factory):
    return write_archive(tmp_path / "archive", clip_factory, "f")


def test_folder_is_searched_recursively_and_a_rerun_skips_what_is_recorded(exported, folder, tmp_path):
    out = tmp_path / "results.jsonl"
    proc = run_cli(folder, "--out", out, "--json", "--model", exported("ia"))
    assert proc.returncode == 1  # the broken file
    assert_clean_stderr(proc)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.mp4" in errors[0]
    assert "skipped 1 hidden and 1 non-media" in proc.stderr
    assert "3 done, 0 skipped" in proc.stderr and "1 failed" in proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    good = sorted(Path(r["file"]).name for r in lines if "error" not in r)
    assert good == ["a.mp4", "b.mp4", "c.mp4"]

    again = run_cli(folder, "--out", out, "--json", "--model", exported("ia"))
    assert "0 done, 3 skipped" in again.stderr
    after = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r for r in after if "error" not in r] == [r for r in lines if "error" not in r]


def test_a_run_killed_part_way_loses_nothing_and_repeats_nothing(exported, folder, tmp_path):
    out = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(cli(folder, "--out", out, "--timeline", "--json", "--model", exported("ia")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    first = out.read_text().splitlines()
    assert len(first) >= 2
    run_cli(folder, "--out", out, "--timeline", "--json", "--model", exported("ia"))
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    keys = [(r["file"], r["window"][0]) for r in records if "error" not in r]
    assert len(keys) == len(set(keys))  # nothing twice
    per_file = {Path(f).name for f, _ in keys}
    assert per_file == {"a.mp4", "b.mp4", "c.mp4"}  # nothing lost

"""`mer-infer`: the emotion of clips, folders, whole recordings (--timeline) and live sources (--live).

A bad input gets one line on stderr naming it and the reason; the other inputs are still done, and
the exit status is 1 if any input failed (2 for a usage or model error, or output that cannot be
written). Records go to stdout (a table, or JSON lines with --json) and, with --out, are appended
to a JSON-lines file and flushed one by one, so a run killed at any moment keeps what it finished
and a re-run of the same command skips it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from . import options


class _OutputError(Exception):
    """stdout or an output file cannot be written (a full disk, a closed pipe)."""


def _route_native_stderr_away() -> None:
    """Keep stderr for our own messages: native libraries (MediaPipe's LiteRT) write INFO lines
    straight to fd 2, at detector creation and at exit. Python's sys.stderr keeps the real one."""
    if os.environ.get("MER_DEBUG"):
        return
    try:
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    except OSError:
        pass


def _say(kind: str, message: str, prog: str = "mer-infer") -> None:
    """One line of ours on stderr (`prog: kind: message`); a closed stderr is not an error."""
    try:
        sys.stderr.write(f"{prog}: {kind}: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


def _fail(message: str) -> None:
    _say("error", message)


def _emit(line: str) -> None:
    """One whole line to stdout, flushed; a write failure becomes _OutputError (not a traceback)."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except OSError as exc:
        raise _OutputError(exc.strerror or type(exc).__name__) from None


def _finish(code: int) -> None:
    """Exit without Python's final flush of a broken stdout printing a traceback."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# Inputs
def expand(paths: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Files to do, in order: a folder means every media file under it (recursively, sorted);
    hidden entries and files that are not media by their suffix are skipped and said once."""
    from .source import MEDIA_SUFFIXES

    files, notes = [], []
    for p in paths:
        if p != "-" and os.path.isdir(p):
            hidden = other = 0
            for root, dirs, names in os.walk(p):
                hidden += sum(d.startswith(".") for d in dirs)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        hidden += 1
                    elif Path(name).suffix.lower() in MEDIA_SUFFIXES:
                        files.append(os.path.join(root, name))
                    else:
                        other += 1
            if hidden or other:
                notes.append(f"{p}: skipped {hidden} hidden and {other} non-media entries")
            if not any(f.startswith(os.path.join(p, "")) for f in files):
                notes.append(f"{p}: no media files under it")
        else:
            files.append(p)
    return files, notes


def _recorded(out: Path) -> tuple[set[str], dict[str, set[float]]]:
    """What an earlier run already wrote to `out`: whole files, and timeline windows by start."""
    from .report import read_jsonl, recorded

    return recorded(read_jsonl(out)) if out.exists() else (set(), {})


# ---------------------------------------------------------------------------------------------
# Output
class _Progress:
    """files done / total, rate and ETA on one stderr line, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.on = total > 1 and sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if not self.on:
            return
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        bar = "#" * int(24 * self.done / self.total)
        eta_s = f"{int(eta // 60)}m{int(eta % 60):02d}s" if math.isfinite(eta) else "?"
        sys.stderr.write(f"\r[{bar:<24}] {self.done}/{self.total} files  {rate:.2f}/s  ETA {eta_s} ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def _table_row(name: str, width: int, result) -> str:
    from .errors import printable

    conf = result.probabilities[result.label]
    t = result.timings_ms
    faces = f"{result.faces_detected:>2}/15"
    return f"{printable(name):<{width}}  {result.label:<9}  {conf:>5.2f}  {faces}  {_heard(result):>5}  {t['total']:>8.1f}"


def _heard(result) -> str:
    """The AUDIO column: read as speech (yes), none (no), or sound without a voice, not read (noise)."""
    from .voice import NO_VOICE

    if result.audio:
        return "yes"
    return "noise" if any(w.startswith(NO_VOICE) for w in result.warnings) else "no"


def _segment_table(name: str, records: list[dict], duration: float | None) -> list[str]:
    from .errors import printable
    from .report import segments

    lines = [f"{printable(name)}: {len(records)} windows", f"  {'START':>8}  {'END':>8}  {'LABEL':<9}  {'CONF':>5}  WINDOWS"]
    for seg in segments(records, duration):
        lines.append(f"  {seg.start:>8.2f}  {seg.end:>8.2f}  {seg.label:<9}  {seg.confidence:>5.2f}  {seg.windows}")
    return lines


# ---------------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1)
@options.model()
@options.fusion()
@options.backend()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record per line.")
@click.option("--timeline", is_flag=True, help="One record per window over the whole recording.")
@options.hop()
@click.option("--plot", "plot_path", help="--timeline: write a chart of the emotions over time (PNG).")
@click.option("--csv", "csv_path", help="--timeline: write one row per window to this CSV file.")
@click.option("--out", "out_path", help="Append records to this JSON-lines file; a re-run skips what it holds.")
@click.option("--live", "live_source", help="A live source: camera (0, /dev/video0), mic, 0+mic, URL, - (stdin), or a file.")
@click.option("--realtime", is_flag=True, help="--live with a file: deliver it at its own pace, as a camera would.")
@options.voice_gate()
def main(paths, model_path, fusion, backend, as_json, timeline, hop, plot_path, csv_path, out_path,
         live_source, realtime, voice_gate) -> None:
    """Recognise the emotion in talking-face clips (mp4, avi, mkv, mov, webm...) or speech files
    (wav, flac, mp3...): neutral, calm, happy, sad, angry, fearful, disgust or surprised.
    Folders are searched recursively."""
    _route_native_stderr_away()
    options.check_model(model_path, fusion)
    if live_source is None and not paths:
        raise click.UsageError("give a file or folder, or --live SOURCE")
    if live_source is not None and paths:
        raise click.UsageError("--live takes its source as its value: give no other inputs")
    if realtime and live_source is None:
        raise click.UsageError("--realtime goes with --live")
    if (plot_path or csv_path) and not (timeline or live_source):
        raise click.UsageError("--plot and --csv need --timeline (or --live)")
    if hop is not None and not (timeline or live_source):
        raise click.UsageError("--hop needs --timeline or --live")
    options.check_hop(hop)

    from .errors import MerError
    from .recognizer import Recognizer, bundled_model

    files, notes = expand(paths) if paths else ([], [])
    if plot_path and len(files) > 1:
        raise click.UsageError("--plot draws one recording: give one file")
    for note in notes:
        _say("note", note)
    try:
        if model_path is not None and not model_path.strip():
            from .errors import ModelError
            raise ModelError("", "empty model path (--model \"\")")
        model = model_path if model_path is not None else bundled_model(fusion or "ia")
        recognizer = Recognizer(model, backend=backend, voice_gate=voice_gate)
    except MerError as exc:
        _fail(str(exc))
        _finish(2)
    except Exception as exc:  # a model file broken in a way we did not foresee: still one line
        if os.environ.get("MER_DEBUG"):
            raise
        _fail(f"{model_path or 'bundled model'}: cannot load model ({type(exc).__name__}: {exc})")
        _finish(2)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish the record in hand, then stop
    try:
        with recognizer:
            if live_source is not None:
                code = _run_live(recognizer, live_source, hop, realtime, as_json, out_path, csv_path, plot_path, stop)
            else:
                code = _run_files(recognizer, files, timeline, hop, as_json, out_path, csv_path, plot_path, stop)
    except _OutputError as exc:
        _fail(f"cannot write output: {exc}")
        code = 2
    _finish(code)


class _Sinks:
    """Where records go: stdout (table or JSON), --out (JSON lines, appended), --csv."""

    def __init__(self, as_json: bool, out_path: str | None, csv_path: str | None):
        self.as_json = as_json
        self.out = None
        self.csv = None
        try:
            if out_path:
                from .report import ends_mid_line

                self.out = open(out_path, "a", encoding="utf-8")
                # A run killed mid-line left a partial last line: end it, so that the next record
                # starts on a line of its own (the partial one is skipped on reading).
                if ends_mid_line(Path(out_path)):
                    self.out.write("\n")
            if csv_path:
                from .report import CsvWriter
                self.csv = CsvWriter(Path(csv_path))
        except OSError as exc:
            raise _OutputError(f"{exc.filename}: {exc.strerror}") from None

    def record(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, ensure_ascii=False)
        if self.as_json:
            _emit(line)
        try:
            if self.out is not None:
                self.out.write(line + "\n")  # one write of a whole line, flushed before the next
                self.out.flush()
            if self.csv is not None and "window" in record:
                self.csv.write(record)
        except OSError as exc:
            raise _OutputError(exc.strerror or type(exc).__name__) from None

    def close(self) -> None:
        for f in (self.out, self.csv):
            if f is not None:
                f.close()


def _run_files(rec, files, timeline, hop, as_json, out_path, csv_path, plot_path, stop) -> int:
    from .errors import InputError, ModelError, printable

    whole, done_windows = _recorded(Path(out_path)) if out_path else (set(), {})
    sinks = _Sinks(as_json, out_path, csv_path)
    width = max(4, *(len(f) for f in files)) if files else 4
    if not as_json and not timeline:
        _emit(f"{'FILE':<{width}}  {'LABEL':<9}  {'PROB':>5}  {'FACES':>5}  {'AUDIO':>5}  {'TOTAL_MS':>8}")
    counts = {"done": 0, "skipped": 0, "failed": 0}
    progress = _Progress(len(files))
    try:
        for path in files:
            if stop.is_set():
                break
            if path in whole and not timeline:
                counts["skipped"] += 1
                progress.step()
                continue
            try:
                if timeline:
                    written = _timeline_one(rec, path, hop, sinks, done_windows.get(path, set()), plot_path, stop)
                    counts["done" if written else "skipped"] += 1
                else:
                    result = rec.predict(path)
                    record = result.to_dict()
                    sinks.record(record)
                    if not as_json:
                        _emit(_table_row(path, width, result))
                        for warning in result.warnings:
                            _emit(f"{'':<{width}}  note: {warning}")
                    counts["done"] += 1
            except InputError as exc:
                counts["failed"] += 1
                _fail(str(exc))
                if sinks.out is not None:
                    sinks.record({"file": path, "error": exc.reason})
            except ModelError as exc:
                _fail(str(exc))
                return 2
            except _OutputError:
                raise
            except Exception as exc:  # a bug of ours: still one line, and go on with the rest
                if os.environ.get("MER_DEBUG"):
                    raise
                counts["failed"] += 1
                _fail(f"{printable(path)}: internal error ({type(exc).__name__}: {exc}); "
                      "set MER_DEBUG=1 for a traceback")
            progress.step()
    finally:
        progress.close()
        sinks.close()
    if len(files) > 1 or out_path:
        interrupted = " (interrupted)" if stop.is_set() else ""
        _say("summary", f"{counts['done']} done, {counts['skipped']} skipped (already recorded), "
                        f"{counts['failed']} failed{interrupted}")
    return 1 if counts["failed"] else (130 if stop.is_set() else 0)


def _timeline_one(rec, path, hop, sinks, recorded: set[float], plot_path, stop) -> bool:
    """All windows of one recording; returns False when every one was already recorded."""
    from . import window as windows
    from .source import MediaSource

    if recorded:  # a re-run: skip the file if every planned window is in --out already
        with MediaSource(path, rec.spec) as probe:
            planned = windows.timeline(probe.info.duration, rec.spec, rec._hop(hop))
        if all(round(w.start, 3) in recorded for w in planned):
            return False
    records = []
    duration = None
    for result in rec.timeline(path, hop):
        record = {**result.to_dict(), "timeline": True}
        records.append(record)
        if round(record["window"][0], 3) not in recorded:
            sinks.record(record)
        if stop.is_set():
            break
    if records:
        duration = records[-1]["window"][1]
    if not sinks.as_json:
        for line in _segment_table(path, records, duration):
            _emit(line)
    if plot_path and records:
        from .report import plot
        plot(records, Path(plot_path), title=str(path))
    return True


def _run_live(rec, source, hop, realtime, as_json, out_path, csv_path, plot_path, stop) -> int:
    from .errors import InputError, ModelError, printable

    sinks = _Sinks(as_json, out_path, csv_path)
    records = []
    try:
        for result in rec.live(source, hop, realtime=realtime, stop=stop):
            record = result.to_dict()
            records.append(record)
            sinks.record(record)
            if not as_json:
                if len(records) == 1:  # on the first window: a source that cannot open gets its error alone
                    _emit(f"{'START':>8}  {'END':>8}  {'LABEL':<9}  {'PROB':>5}  {'FACES':>5}  {'AUDIO':>5}  "
                          f"{'LATENCY_MS':>10}")
                _emit(f"{result.window[0]:>8.2f}  {result.window[1]:>8.2f}  {result.label:<9}  "
                      f"{result.probabilities[result.label]:>5.2f}  {result.faces_detected:>2}/15  "
                      f"{_heard(result):>5}  {result.latency_ms:>10.1f}")
                for warning in result.warnings:
                    _emit(f"{'':>8}  note: {warning}")
            if stop.is_set():
                break
    except InputError as exc:
        _fail(str(exc))
        return 1
    except ModelError as exc:
        _fail(str(exc))
        return 2
    finally:
        sinks.close()
    if plot_path and records:
        from .report import plot
        plot(records, Path(plot_path), title=printable(source))
    return 0


if __name__ == "__main__":
    main()

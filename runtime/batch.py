"""`mer-batch`: `mer-infer` over many files on Ray Data (the `[scale]` extra), locally or on a cluster.

    mer-batch SOURCE --out DIR [--address ADDR] [--timeline] [--format jsonl|parquet] ...

SOURCE is a folder (every media file under it, as `mer-infer` finds them) or a manifest (a text
file, one path or URL per line; blank lines and `#` comments skipped; relative paths are relative
to the manifest's folder). The pipeline is Ray Data's own:

    from_items(files) -> map_batches(RecognizerActor, ActorPoolStrategy(size=N)) -> iter_rows()

Each actor of the pool holds one `Recognizer` (made once, in its constructor) and reserves the
CPUs (and GPUs) it is configured with; its ONNX Runtime uses that many threads, so the actors do
not oversubscribe the cores. Ray Data schedules the files over the pool with its own bounded
queues and backpressure; the driver consumes the results as a stream, in completion order.

Output. The driver writes the records under DIR, so a run killed at any moment keeps what it
finished, and a re-run skips it (a file with a record that is not an error; with `--timeline`,
each recorded window):

- `jsonl` (default): DIR/results.jsonl, the records `mer-infer --out` writes (same keys, same
  values but the run's own timings), appended and flushed file by file; `mer-infer DIR --out
  DIR2/results.jsonl` and `mer-batch DIR --out DIR2` resume each other's runs.
- `parquet`: DIR/part-<run>-<n>.parquet, one part per 256 records or per minute, each written
  under a hidden name and renamed when complete (a killed run leaves no broken part). Columns are
  the record's keys, nested ones kept as structs (`probabilities.happy`, `timings_ms.total`,
  `model.fusion`) and lists (`window`, `warnings`); keys a record lacks are null (`error` on a
  success, everything but `file` and `error` on a failure, `timeline` without --timeline).

A file that cannot be read is a record `{"file": F, "error": reason}` (the same as `mer-infer
--out`) plus one line on stderr, and the run goes on; so is a file whose worker process died
while reading it (a crash in a native decoder: see run_pipeline). A model that does not load
stops the run with its one-line reason. Exit status: 0, or 1 when a file failed, 2 for a usage,
model or output error, 130 when interrupted.

Ray is imported inside functions only: `import mer.runtime` stays light.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click

from . import options
from .report import ends_mid_line, read_jsonl, recorded

PROG = "mer-batch"
JSONL_NAME = "results.jsonl"
PART_ROWS = 256          # a Parquet part every this many records...
PART_SECONDS = 60.0      # ...or this often, whichever comes first
MAX_BLOCKS = 20_000      # one file per Ray Data block (per task) up to this many files
IN_FLIGHT = 2            # files handed to an actor at once: the next one is ready when it finishes
CPUS_PER_ACTOR = 2       # default: the engine overlaps decoding with faces and model (2 threads)


class _UsageError(Exception):
    pass


class ActorModelError(Exception):
    """A ModelError raised in an actor, in a form Ray can carry back (one message argument)."""


def _say(kind: str, message: str) -> None:
    from .cli import _say as say

    say(kind, message, PROG)


# ---------------------------------------------------------------------------------------------
# Inputs
def read_manifest(path: str) -> list[str]:
    """One path or URL per line; blank lines and `#` comments skipped; relative paths are taken
    relative to the manifest's folder (a folder named in it is searched as `mer-infer` does)."""
    from .cli import expand
    from .source import is_url

    base = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise _UsageError(f"{path}: not a manifest (not UTF-8 text; give a folder or a text file "
                          "with one path or URL per line)") from None
    except OSError as exc:
        raise _UsageError(f"{path}: {exc.strerror}") from None
    entries = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_url(entry):
            entry = os.path.join(base, os.path.expanduser(entry))
        entries.append(entry)
    files, notes = expand(tuple(entries))
    for note in notes:
        _say("note", note)
    return files


def source_files(source: str) -> list[str]:
    """The files a SOURCE names, in order, without repeats."""
    from .cli import expand
    from .source import MEDIA_SUFFIXES

    if os.path.isdir(source):
        files, notes = expand((source,))
        for note in notes:
            _say("note", note)
    elif os.path.isfile(source) and Path(source).suffix.lower() in MEDIA_SUFFIXES:
        files = [source]  # one media file: a batch of one
    elif os.path.isfile(source):
        files = read_manifest(source)
    else:
        raise _UsageError(f"{source}: no such folder or manifest")
    return list(dict.fromkeys(files))


# ---------------------------------------------------------------------------------------------
# What DIR already holds
def existing_records(out: Path, fmt: str) -> Iterator[dict]:
    """Records an earlier run wrote under `out` (only the keys resuming needs, for Parquet)."""
    if fmt == "jsonl":
        path = out / JSONL_NAME
        if path.exists():
            yield from read_jsonl(path)
    else:
        import pyarrow.parquet as pq

        for part in sorted(out.glob("part-*.parquet")):
            try:
                table = pq.read_table(part)
            except Exception as exc:  # not ours, or damaged after the fact: said, then ignored
                _say("note", f"{part}: unreadable Parquet part ignored ({type(exc).__name__})")
                continue
            cols = [c for c in ("file", "error", "timeline", "window") if c in table.column_names]
            yield from table.select(cols).to_pylist()


# ---------------------------------------------------------------------------------------------
# The actor: one Recognizer per actor, one file per call
class RecognizerActor:
    """A Ray Data callable class. Input rows: `path` (what the worker opens), `name` (the file as
    the user named it, the record's "file"), `recorded` (JSON list of window starts already
    recorded, --timeline). Output rows, one per file: `name`, `status` (done, skipped, failed),
    `lines` (the file's records as JSON lines)."""

    def __init__(self, model: str | None, fusion: str | None, backend: str, threads: int, timeline: bool,
                 hop: float | None, voice_gate: bool = True):
        from .errors import MerError
        from .recognizer import Recognizer, bundled_model

        try:  # the bundled model is looked up here: its path on this node, not the driver's
            self.rec = Recognizer(model if model is not None else bundled_model(fusion or "ia"),
                                  backend=backend, threads=threads, voice_gate=voice_gate)
        except MerError as exc:  # the run stops with this one-line reason
            raise ActorModelError(str(exc)) from None
        self.timeline, self.hop = timeline, hop

    def __call__(self, batch: dict) -> dict:
        out = {"name": [], "status": [], "lines": []}
        for path, name, done in zip(batch["path"], batch["name"], batch["recorded"]):
            status, records = self.one(str(path), str(name), set(json.loads(str(done))))
            out["name"].append(str(name))
            out["status"].append(status)
            out["lines"].append("".join(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in records))
        return out

    def one(self, path: str, name: str, done: set[float]) -> tuple[str, list[dict]]:
        from .errors import InputError, ModelError

        try:
            if not self.timeline:
                record = self.rec.predict(path).to_dict()
                record["file"] = name
                return "done", [record]
            return self.windows(path, name, done)
        except InputError as exc:
            return "failed", [{"file": name, "error": exc.reason}]
        except ModelError as exc:  # the model refused this input (non-finite logits): recorded
            return "failed", [{"file": name, "error": f"model error: {exc.reason}"}]
        except Exception as exc:  # a bug of ours on this file: recorded, and on with the rest
            return "failed", [{"file": name, "error": f"internal error ({type(exc).__name__}: {exc})"}]

    def windows(self, path: str, name: str, done: set[float]) -> tuple[str, list[dict]]:
        """--timeline: the windows not yet recorded (as `mer-infer --timeline --out` resumes)."""
        from . import window as windows
        from .source import MediaSource

        hop = windows.default_hop(self.rec.spec) if self.hop is None else self.hop
        if done:
            with MediaSource(path, self.rec.spec, name=name) as probe:
                planned = windows.timeline(probe.info.duration, self.rec.spec, hop)
            if all(round(w.start, 3) in done for w in planned):
                return "skipped", []
        records = []
        for result in self.rec.timeline(path, hop):
            record = {**result.to_dict(), "file": name, "timeline": True}
            if round(record["window"][0], 3) not in done:
                records.append(record)
        return "done", records


# ---------------------------------------------------------------------------------------------
# Writers: the driver appends records under DIR as they arrive
class JsonlWriter:
    def __init__(self, out: Path):
        path = out / JSONL_NAME
        self.f = open(path, "a", encoding="utf-8")
        if ends_mid_line(path):  # a run killed mid-line: the next record starts on its own line
            self.f.write("\n")

    def write(self, lines: str) -> None:
        self.f.write(lines)  # a file's records in one write, flushed before the next file
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def parquet_schema():
    import pyarrow as pa

    from .recognizer import TIMINGS
    from .spec import LABELS

    f64 = pa.float64()
    return pa.schema([
        ("file", pa.string()), ("label", pa.string()), ("index", pa.int64()),
        ("probabilities", pa.struct([(label, f64) for label in LABELS])),
        ("faces_detected", pa.int64()), ("audio", pa.bool_()), ("window", pa.list_(f64)),
        ("timings_ms", pa.struct([(k, f64) for k in TIMINGS])),
        ("model", pa.struct([(k, pa.string()) for k in ("fusion", "precision", "backend")])),
        ("warnings", pa.list_(pa.string())), ("timeline", pa.bool_()), ("error", pa.string()),
    ])


class ParquetWriter:
    """Complete parts only: each part is written under a hidden name, then renamed."""

    def __init__(self, out: Path):
        import pyarrow  # noqa: F401  (fail here, before any work, when the extra is missing)

        self.out, self.rows, self.n = out, [], 0
        self.run = f"{datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}"
        self.t0 = time.monotonic()
        self.schema = parquet_schema()
        for stale in out.glob(".part-*.parquet.tmp"):  # a part a killed run was writing
            stale.unlink(missing_ok=True)

    def write(self, lines: str) -> None:
        self.rows.extend(json.loads(line) for line in lines.splitlines())
        if len(self.rows) >= PART_ROWS or time.monotonic() - self.t0 >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.rows:
            name = f"part-{self.run}-{self.n:05d}.parquet"
            tmp = self.out / f".{name}.tmp"
            pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), tmp)
            os.replace(tmp, self.out / name)
            self.n += 1
            self.rows = []
        self.t0 = time.monotonic()

    def close(self) -> None:
        self.flush()


# ---------------------------------------------------------------------------------------------
# Ray
def _quiet_ray_logs() -> None:
    """Ray's Python loggers and warnings print progress, deprecation and tuning notes to
    sys.stderr, which is for our own lines."""
    if os.environ.get("MER_DEBUG"):
        return
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"ray\.")  # its deprecation and tuning notes


def start_ray(address: str | None, num_cpus: int | None):
    """(ray, own): a local Ray (num_cpus, default all) or the cluster at `address`; a Ray this
    process has already initialised (a notebook, the tests) is used as it is (own=False)."""
    import ray
    import ray.data  # noqa: F401  (sets up Ray Data's loggers, which _quiet_ray_logs then quiets)

    if ray.is_initialized():
        return ray, False
    _quiet_ray_logs()
    kwargs = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address is None:  # a fresh local Ray, even when RAY_ADDRESS points elsewhere
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    _quiet_ray_logs()
    return ray, True


def pool_size(resources: dict, actors: int | None, cpus: int | None, gpus: float) -> tuple[int, int]:
    """(actors, CPUs per actor): with N actors on C CPUs each gets max(1, C // N) CPUs and as many
    ONNX Runtime threads. By default one actor per CPUS_PER_ACTOR CPUs (on 2 cores, one actor
    with both: measured faster than two with one each, the engine already keeps two cores busy),
    or one per `gpus` GPUs when GPUs are asked for."""
    total_cpus = max(1, int(resources.get("CPU", 1)))
    if actors is None:
        if gpus > 0:
            actors = max(1, int(resources.get("GPU", 0) // gpus))
        else:
            actors = max(1, total_cpus // (cpus or CPUS_PER_ACTOR))
    if cpus is None:
        cpus = max(1, total_cpus // actors)
    return actors, cpus


def _pass(ray, rows: list[dict], actor_cls, actor_args: tuple, actors: int, cpus: int, gpus: float,
          in_flight: int, retries: int, returned: set[str]) -> Iterator[dict]:
    """One Ray Data pipeline over `rows`; the names that came back are added to `returned`."""
    import ray.data

    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
    pool = ray.data.ActorPoolStrategy(size=min(actors, len(rows)), max_tasks_in_flight_per_actor=in_flight)
    options = dict(fn_constructor_args=actor_args, batch_size=1, batch_format="numpy", compute=pool,
                   num_cpus=cpus, num_gpus=gpus or None)
    try:
        with warnings.catch_warnings():  # Ray 2.5x: "ray_remote_args is deprecated" (no named form yet)
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(actor_cls, **options, max_task_retries=retries)
    except TypeError:  # a Ray that no longer takes free remote args
        ds = ds.map_batches(actor_cls, **options)
    for row in ds.iter_rows():
        returned.add(str(row["name"]))
        yield {"name": str(row["name"]), "status": str(row["status"]), "lines": str(row["lines"])}


def run_pipeline(ray, rows: list[dict], actor_args: tuple, actors: int, cpus: int, gpus: float,
                 actor_cls=RecognizerActor) -> Iterator[dict]:
    """Ray Data: rows -> actor pool -> one result row per file, streamed in completion order.

    Each actor has at most IN_FLIGHT files handed to it (the next file waits at the actor, not in
    the driver's loop). A worker process that dies (a crash in a native decoder) takes the files
    handed to it along: its tasks are retried once, and a block that still fails is left out
    rather than failing the run. Files left out are then run again one at a time per actor with
    no retry, so that only the file that crashes its worker is recorded as failed."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": sys.stderr.isatty(), "print_on_execution_start": False,
                "enable_auto_log_stats": False, "max_errored_blocks": -1,
                "actor_init_retry_on_errors": False}  # a model that does not load stops the run at once
    saved = {k: getattr(ctx, k) for k in settings if hasattr(ctx, k)}
    for k, v in settings.items():
        setattr(ctx, k, v)
    try:
        returned: set[str] = set()
        yield from _pass(ray, rows, actor_cls, actor_args, actors, cpus, gpus, IN_FLIGHT, 1, returned)
        left = [row for row in rows if row["name"] not in returned]
        if left:
            yield from _pass(ray, left, actor_cls, actor_args, actors, cpus, gpus, 1, 0, returned)
    finally:
        for k, v in saved.items():  # a Ray of the caller's (a notebook) gets its context back
            setattr(ctx, k, v)
    for row in rows:
        if row["name"] not in returned:
            yield {"name": row["name"], "status": "failed",
                   "lines": json.dumps({"file": row["name"], "error": "no result came back: the worker reading "
                                        "it died (a crash in a native library?)"}, ensure_ascii=False) + "\n"}


def _model_error(exc: BaseException) -> str | None:
    """The one-line reason when an actor could not load or run the model. Ray hands it back
    wrapped (an ActorDiedError whose text holds the creation task's traceback, or a task error
    whose cause is ours): found by type along the chain, else by name in the text."""
    seen = set()
    marker = f"{ActorModelError.__name__}: "
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ActorModelError):
            return str(exc.args[0]) if exc.args else str(exc)
        for line in str(exc).splitlines():
            if marker in line:
                return line.split(marker, 1)[1].strip()
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None


# ---------------------------------------------------------------------------------------------
# CLI
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", required=False)
@click.option("--out", "out_dir", help="Folder for the records (made if missing); a re-run skips what it holds.")
@click.option("--address", help="A running Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: a local Ray).")
@click.option("--format", "fmt", type=click.Choice(("jsonl", "parquet")), default="jsonl", show_default=True,
              help="DIR/results.jsonl, or DIR/part-*.parquet.")
@click.option("--timeline", is_flag=True, help="One record per window over each whole recording.")
@options.hop("--timeline: seconds between windows (default 0.96).")
@options.model("ONNX model file or TensorRT engine, readable on every node (default: the bundled model).")
@options.fusion()
@options.backend("Execution backend in each actor.")
@click.option("--actors", type=click.IntRange(min=1), help="Actors in the pool, each with one recogniser "
                                                           "(default: one per CPU, or per --gpus-per-actor GPUs).")
@click.option("--cpus-per-actor", type=click.IntRange(min=1), help="CPUs each actor reserves, and its ONNX "
                                                                   "Runtime threads (default: CPUs // actors).")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs each actor reserves (a fraction shares one GPU).")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (default: all); not with --address.")
@options.voice_gate()
def command(source, out_dir, address, fmt, timeline, hop, model_path, fusion, backend, actors, cpus_per_actor,
            gpus_per_actor, num_cpus, voice_gate) -> None:
    """Recognise the emotion in every file of SOURCE, a folder or a manifest (one path or URL per
    line), on Ray Data: a pool of actors, one recogniser each, the same records as mer-infer."""
    from .cli import _route_native_stderr_away

    _route_native_stderr_away()  # native libraries' INFO lines (Ray's core worker, LiteRT) off stderr
    if not os.environ.get("MER_DEBUG"):
        # mer-batch writes nothing to stdout; Ray's driver prints its raylet's notes there (a worker
        # that died, say) with no switch to turn them off. A failed file is our own stderr line.
        sys.stdout = open(os.devnull, "w")
    if not source:
        raise click.UsageError("give a folder or a manifest")
    if not out_dir:
        raise click.UsageError("give --out DIR")
    options.check_model(model_path, fusion)
    if hop is not None and not timeline:
        raise click.UsageError("--hop needs --timeline")
    options.check_hop(hop)
    if num_cpus is not None and address:
        raise click.UsageError("--num-cpus sizes a local Ray: not with --address")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt, handled in run()
    code = run(source, Path(out_dir), address, fmt, timeline, hop, model_path, fusion, backend, actors,
               cpus_per_actor, gpus_per_actor, num_cpus, voice_gate)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """The console script: a usage error is one line on stderr and exit status 2."""
    try:
        command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as exc:  # also a bad option value (click.BadParameter)
        _say("error", f"{exc.format_message()} (see {PROG} --help)")
        sys.exit(2)
    except click.Abort:
        sys.exit(130)
    sys.exit(0)


def run(source, out, address, fmt, timeline, hop, model_path, fusion, backend, actors, cpus_per_actor,
        gpus_per_actor, num_cpus, voice_gate: bool = True) -> int:
    from .errors import ModelError, printable
    from .recognizer import bundled_model

    try:
        if model_path is not None:
            if not model_path.strip():
                raise ModelError("", "empty model path (--model \"\")")
            if address is None and not os.path.isfile(model_path):
                raise ModelError(model_path, "no such file")
            model = os.path.abspath(model_path) if os.path.exists(model_path) else model_path
        else:
            model = None
            bundled_model(fusion or "ia")  # shipped in this install? (each actor finds its own)
    except ModelError as exc:
        _say("error", str(exc))
        return 2
    try:
        files = source_files(source)
    except _UsageError as exc:
        _say("error", str(exc))
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        whole, done_windows = recorded(existing_records(out, fmt))
        writer = JsonlWriter(out) if fmt == "jsonl" else ParquetWriter(out)
    except ImportError as exc:
        _say("error", f"--format parquet needs pyarrow (pip install 'mer[scale]'): {exc}")
        return 2
    except OSError as exc:
        _say("error", f"cannot write output: {exc.filename or out}: {exc.strerror}")
        return 2

    from .source import is_url

    counts = {"done": 0, "skipped": 0, "failed": 0}
    rows = []
    for name in files:
        if not timeline and name in whole:
            counts["skipped"] += 1
            continue
        path = name if is_url(name) else os.path.abspath(name)  # workers need not share our cwd
        rows.append({"path": path, "name": name, "recorded": json.dumps(sorted(done_windows.get(name, ())))})

    interrupted = False
    code = 0
    try:
        if rows:
            try:
                ray, own = start_ray(address, num_cpus)
            except ImportError as exc:
                _say("error", f"mer-batch needs Ray Data (pip install 'mer[scale]'): {exc}")
                return 2
            except Exception as exc:
                if os.environ.get("MER_DEBUG"):
                    raise
                _say("error", f"cannot start or reach Ray ({type(exc).__name__}: {_first_line(exc)})")
                return 2
            try:
                n, cpus = pool_size(ray.cluster_resources(), actors, cpus_per_actor, gpus_per_actor)
                args = (model, fusion, backend, cpus, timeline, hop, voice_gate)
                for result in run_pipeline(ray, rows, args, n, cpus, gpus_per_actor):
                    if result["lines"]:
                        writer.write(result["lines"])
                    counts[result["status"]] += 1
                    if result["status"] == "failed":
                        for line in result["lines"].splitlines():
                            _say("error", f"{printable(result['name'])}: {json.loads(line)['error']}")
            finally:
                if own:
                    ray.shutdown()
    except KeyboardInterrupt:  # Ctrl-C: what is written stays, and Ray is shut down
        interrupted = True
        code = 130
    except OSError as exc:
        _say("error", f"cannot write output: {exc.strerror or type(exc).__name__}")
        code = 2
    except Exception as exc:
        if os.environ.get("MER_DEBUG"):
            raise
        reason = _model_error(exc)
        _say("error", reason or f"the Ray pipeline failed ({type(exc).__name__}: {_first_line(exc)}); "
                                "set MER_DEBUG=1 for Ray's logs and traceback")
        code = 2
    finally:
        try:
            writer.close()
        except OSError as exc:
            _say("error", f"cannot write output: {exc.strerror or type(exc).__name__}")
            code = 2
    if code == 2 and not any(counts.values()):
        return 2  # a model or output error before any file: its one line is all
    _say("summary", f"{counts['done']} done, {counts['skipped']} skipped (already recorded), "
                    f"{counts['failed']} failed{' (interrupted)' if interrupted else ''}")
    if code:
        return code
    return 1 if counts["failed"] else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


if __name__ == "__main__":  # python -m mer.runtime.batch: the actors' class from the module, not __main__
    from mer.runtime.batch import main as _main

    _main()

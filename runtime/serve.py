"""`mer-serve`: mer as an HTTP service, an ASGI app (FastAPI) on uvicorn. Extra `[serve]`.

    mer-serve --host 127.0.0.1 --port 8000 --workers 2
    GET  /healthz          200 once the model is loaded
    GET  /metrics          Prometheus text: requests, errors by reason, latency per stage, in flight
    POST /v1/recognize     body = media bytes (any type but text, JSON, XML) or multipart field `file`;
                           ?timeline=true&hop=S streams one JSON record per window (NDJSON)
    WS   /v1/live          media chunks in (a browser's MediaRecorder), window records out
    GET  /                 a page: camera and microphone, the current emotion, the last minute

Work is bounded: each worker process (`--workers`, uvicorn's) holds one recogniser per worker
thread (`--threads`, default 1) with ONNX Runtime's threads set to cores / (workers x threads);
at most `--queue` requests wait beyond those; more are answered 503 with Retry-After at once.
Uploads stream to a temporary file, refused with 413 as soon as they pass `--max-mb` (or at once
when Content-Length says so); the file is removed when the request ends, however it ends.
Errors are 4xx/5xx `{"error": reason}`; the server stays up.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request,
# WebSocket) at run time, and those names are imported inside create_app.
import asyncio
import contextlib
import json
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

CHUNK = 1 << 16
# Declared types that cannot be media: refused before the body is read. Not
# application/x-www-form-urlencoded: it is what `curl --data-binary @clip.mp4` (the README's
# command) and `curl -d` label any body with unless told otherwise, so the bytes decide.
_NOT_MEDIA_TYPES = ("text/", "application/json", "application/xml")


@dataclass(frozen=True)
class Settings:
    model: str | None = None        # None: the bundled default
    backend: str = "auto"
    threads: int = 1                # worker threads (one recogniser each) per process
    processes: int = 1              # uvicorn worker processes sharing the cores
    queue: int = 4                  # requests allowed to wait for a worker thread
    max_mb: float = 200.0           # upload size limit
    max_seconds: float = 1800.0     # recording length limit
    timeout_s: float = 300.0        # time limit per request
    voice_gate: bool = True         # a face with no voice in its audio is read alone (voice.py)

    @classmethod
    def from_env(cls) -> "Settings":
        raw = os.environ.get("MER_SERVE_SETTINGS")
        return cls(**json.loads(raw)) if raw else cls()


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


class _Metrics:
    """Prometheus metrics of one process, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mer_requests", "Requests answered", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("mer_errors", "Requests refused or failed, by reason", ["reason"], registry=self.registry)
        self.in_flight = Gauge("mer_in_flight", "Requests being served or waiting", registry=self.registry)
        self.stage = Histogram("mer_stage_seconds", "Time per stage per window", ["stage"], registry=self.registry,
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def observe(self, record: dict) -> None:
        for stage, ms in record.get("timings_ms", {}).items():
            self.stage.labels(stage).observe(ms / 1e3)


class _Workers:
    """Worker threads, each with its own recogniser (made on first use, reused after)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="mer-worker")
        self.local = threading.local()
        cores = os.cpu_count() or 1
        self.ort_threads = max(1, cores // max(1, settings.threads * settings.processes))
        self.made: list = []

    def recognizer(self):
        rec = getattr(self.local, "rec", None)
        if rec is None:
            from .recognizer import Recognizer, bundled_model

            rec = Recognizer(self.settings.model or bundled_model(), self.settings.backend, self.ort_threads,
                             voice_gate=self.settings.voice_gate)
            self.local.rec = rec
            self.made.append(rec)
        return rec

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for rec in self.made:
            rec.close()


def create_app(settings: Settings | None = None):
    """The ASGI app (FastAPI). Also what Ray Serve deploys (see README)."""
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

    settings = settings or Settings.from_env()
    # Everything with threads or locks is made at startup, not here: Ray Serve pickles the app
    # to ship it to its replicas.
    state: dict = {"ready": False, "waiting": 0, "workers": None, "metrics": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["metrics"], state["workers"] = _Metrics(), _Workers(settings)
        workers = state["workers"]
        loop = asyncio.get_running_loop()
        # Load the model once in every worker thread before saying ready: a bad model fails here.
        # The face detector too (~0.7 s): made later, it would stall the first live window.
        await asyncio.gather(*(loop.run_in_executor(workers.pool, lambda: workers.recognizer().cropper)
                               for _ in range(settings.threads)))
        state["ready"] = True
        yield
        workers.close()

    app = FastAPI(title="mer", lifespan=lifespan)

    def error(status: int, reason: str, endpoint: str, headers: dict | None = None):
        state["metrics"].requests.labels(endpoint, str(status)).inc()
        state["metrics"].errors.labels(_reason_key(reason)).inc()
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    @app.get("/healthz")
    async def healthz():
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        rec = state["workers"].made[0]
        return {"status": "ok", "model": rec.info.fusion, "backend": rec._model.backend_name,
                "threads": settings.threads, "settings": asdict(settings)}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(state["metrics"].registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("mer.runtime") / "assets" / "live.html").read_text(encoding="utf-8")

    @app.post("/v1/recognize")
    async def recognize(request: Request, timeline: bool = False, hop: float | None = None):
        endpoint = "recognize"
        from .window import hop_problem

        if hop is not None and (problem := hop_problem(hop)):
            return error(422, problem, endpoint)
        folder = tempfile.TemporaryDirectory(prefix="mer-upload-")
        try:
            # The upload first: a slow client holds a connection (uvicorn bounds those), not a worker.
            path, name = await _receive(request, Path(folder.name), settings)
            slot = _admit(state, settings)
        except _Rejected as exc:
            folder.cleanup()
            return error(exc.status, exc.reason, endpoint, exc.headers)
        except BaseException:  # the client went away mid-upload: nothing is left behind
            folder.cleanup()
            raise
        state["metrics"].in_flight.inc()
        loop = asyncio.get_running_loop()
        if not timeline:
            try:
                record = await asyncio.wait_for(
                    loop.run_in_executor(state["workers"].pool, _predict, state["workers"], path, name, settings), settings.timeout_s)
            except asyncio.TimeoutError:
                _release(state, slot, state["metrics"], folder)
                return error(504, f"took longer than this server's limit of {settings.timeout_s:g} s", endpoint)
            except _Rejected as exc:
                _release(state, slot, state["metrics"], folder)
                return error(exc.status, exc.reason, endpoint)
            _release(state, slot, state["metrics"], folder)
            state["metrics"].observe(record)
            state["metrics"].requests.labels(endpoint, "200").inc()
            return JSONResponse(record)
        # Timeline: the first window decides the status (errors before it are 4xx), then NDJSON.
        records: queue.Queue = queue.Queue(maxsize=16)
        stop = threading.Event()
        loop.run_in_executor(state["workers"].pool, _timeline, state["workers"], path, name, hop, settings, records, stop)
        first = await loop.run_in_executor(None, records.get)
        if isinstance(first, _Rejected) or first is None:
            _release(state, slot, state["metrics"], folder)
            reason = first.reason if first is not None else "no window to recognise in it"
            return error(first.status if first is not None else 422, reason, endpoint)

        async def stream():
            try:
                item = first
                while item is not None:
                    if isinstance(item, _Rejected):
                        yield json.dumps({"error": item.reason}) + "\n"
                        break
                    state["metrics"].observe(item)
                    yield json.dumps(item) + "\n"
                    item = await loop.run_in_executor(None, records.get)
            finally:
                stop.set()
                _drain(records)
                _release(state, slot, state["metrics"], folder)

        state["metrics"].requests.labels(endpoint, "200").inc()
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.websocket("/v1/live")
    async def live(ws: WebSocket, hop: float | None = None):
        await ws.accept()
        try:
            slot = _admit(state, settings)
        except _Rejected as exc:
            await ws.send_json({"error": exc.reason})
            await ws.close(code=1013)  # try again later
            return
        state["metrics"].in_flight.inc()
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
        out: queue.Queue = queue.Queue(maxsize=64)
        stop = threading.Event()
        job = loop.run_in_executor(state["workers"].pool, _live, state["workers"], reader, hop, out, stop)

        async def pump_in():
            try:
                while True:
                    message = await ws.receive()
                    if message.get("bytes"):
                        await loop.run_in_executor(None, writer.write, message["bytes"])
                        await loop.run_in_executor(None, writer.flush)
                    elif message.get("type") == "websocket.disconnect" or message.get("text") == "end":
                        break
            except (WebSocketDisconnect, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    writer.close()

        inbound = asyncio.create_task(pump_in())
        try:
            while True:
                item = await loop.run_in_executor(None, out.get)
                if item is None:
                    break
                if isinstance(item, _Rejected):
                    await ws.send_json({"error": item.reason})
                    break
                state["metrics"].observe(item)
                await ws.send_json(item)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            stop.set()
            inbound.cancel()
            with contextlib.suppress(OSError):
                writer.close()
            _drain(out)
            with contextlib.suppress(Exception):  # the worker ends once its pipe is closed
                await job
            with contextlib.suppress(OSError):
                reader.close()
            _release(state, slot, state["metrics"], None)
            state["metrics"].requests.labels("live", "101").inc()
            with contextlib.suppress(RuntimeError):
                await ws.close()

    return app


def _reason_key(reason: str) -> str:
    """A short, low-cardinality label for an error reason (no file names)."""
    for key in ("too large", "limit", "busy", "not a readable", "corrupt", "no audio or video", "nothing to recognise",
                "hop", "content type", "took longer", "no window"):
        if key in reason:
            return key.replace(" ", "_")
    return "other"


def _admit(state: dict, settings: Settings) -> int:
    """Take a place among the requests being served or waiting, or refuse at once (503)."""
    if state["waiting"] >= settings.threads + settings.queue:
        raise _Rejected(503, "server busy: all workers and queue places are taken, try again shortly",
                        {"Retry-After": "1"})
    state["waiting"] += 1
    return 1


def _release(state: dict, slot: int, metrics: _Metrics, folder) -> None:
    state["waiting"] -= slot
    metrics.in_flight.dec()
    if folder is not None:
        folder.cleanup()


def _drain(q: queue.Queue) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()


async def _receive(request, folder: Path, settings: Settings) -> tuple[Path, str]:
    """The upload on disk: the body itself, or the multipart field `file`. 413 past the limit."""
    limit = int(settings.max_mb * 2**20)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _Rejected(413, f"upload too large: {int(length)} bytes, this server's limit is {settings.max_mb:g} MB")
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()  # the type is case-insensitive (RFC 9110); a boundary is not
    if kind.startswith(_NOT_MEDIA_TYPES):
        raise _Rejected(415, f"content type {kind} is not media: send the file's bytes or a "
                             "multipart field 'file'")
    body = folder / "body"
    size = 0
    with open(body, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Rejected(413, f"upload too large: over this server's limit of {settings.max_mb:g} MB")
            f.write(chunk)
    if size == 0:
        raise _Rejected(422, "empty body: send the media file's bytes")
    if kind == "multipart/form-data":
        return _multipart_file(body, ctype, folder)
    return body, "upload"


def _multipart_file(body: Path, ctype: str, folder: Path) -> tuple[Path, str]:
    """Stream the multipart field `file` of `body` to its own file (python-multipart's parser)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _Rejected(422, "multipart body without a boundary")
    out = folder / "file"
    part = {"name": None, "filename": None, "header": b"", "value": b"", "file": None, "found": False}
    headers: dict[bytes, bytes] = {}

    def on_part_begin():
        headers.clear()

    def on_header_field(data, start, end):
        part["header"] = data[start:end].lower()

    def on_header_value(data, start, end):
        headers[part["header"]] = headers.get(part["header"], b"") + data[start:end]

    def on_headers_finished():
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        part["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        if part["name"] == "file" and not part["found"]:
            part["filename"] = disp.get(b"filename", b"upload").decode("utf-8", "replace")
            part["file"] = open(out, "wb")
            part["found"] = True

    def on_part_data(data, start, end):
        if part["file"] is not None and part["name"] == "file":
            part["file"].write(data[start:end])

    def on_part_end():
        if part["file"] is not None:
            part["file"].close()
            part["file"] = None

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        with open(body, "rb") as f:
            while chunk := f.read(CHUNK):
                parser.write(chunk)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own errors for a malformed body
        raise _Rejected(422, f"malformed multipart body ({type(exc).__name__})") from None
    finally:
        if part["file"] is not None:
            part["file"].close()
    if not part["found"]:
        raise _Rejected(422, "multipart body has no field 'file'")
    return out, Path(part["filename"] or "upload").name


def _checked_duration(path: Path, name: str, settings: Settings, spec) -> None:
    from .errors import InputError
    from .source import MediaSource

    try:
        with MediaSource(path, spec, name=name) as source:
            duration = source.info.duration
    except InputError as exc:
        raise _Rejected(422, exc.reason) from None
    if duration is not None and duration > settings.max_seconds:
        raise _Rejected(422, f"recording is {duration:.0f} s, over this server's limit of {settings.max_seconds:g} s")


def _predict(workers: _Workers, path: Path, name: str, settings: Settings) -> dict:
    from .errors import InputError

    rec = workers.recognizer()
    _checked_duration(path, name, settings, rec.spec)
    try:
        record = rec.predict(path).to_dict()
    except InputError as exc:
        raise _Rejected(422, exc.reason) from None
    record["file"] = name
    return record


def _timeline(workers, path, name, hop, settings, out: queue.Queue, stop: threading.Event) -> None:
    """Worker thread: timeline records into `out`, then None; a _Rejected for an error."""
    from .errors import InputError, ModelError

    deadline = time.perf_counter() + settings.timeout_s
    try:
        rec = workers.recognizer()
        _checked_duration(path, name, settings, rec.spec)
        for result in rec.timeline(path, hop):
            if stop.is_set():
                return
            record = {**result.to_dict(), "file": name, "timeline": True}
            out.put(record)
            if time.perf_counter() > deadline:
                out.put(_Rejected(504, f"took longer than this server's limit of {settings.timeout_s:g} s"))
                return
        out.put(None)
    except _Rejected as exc:
        out.put(exc)
    except (InputError, ModelError, ValueError) as exc:
        out.put(_Rejected(422, getattr(exc, "reason", str(exc))))
    except Exception as exc:  # a bug of ours: one reason line, the server stays up
        out.put(_Rejected(500, f"internal error ({type(exc).__name__})"))


def _live(workers, reader, hop, out: queue.Queue, stop: threading.Event) -> None:
    from .errors import InputError, ModelError

    try:
        rec = workers.recognizer()
        for result in rec.live(reader, hop, stop=stop):
            if stop.is_set():
                break
            out.put(result.to_dict())
        out.put(None)
    except (InputError, ModelError, ValueError) as exc:
        out.put(_Rejected(422, getattr(exc, "reason", str(exc))))
    except Exception as exc:
        out.put(_Rejected(500, f"internal error ({type(exc).__name__})"))


def app_from_env():
    """uvicorn's factory for worker processes (settings travel in MER_SERVE_SETTINGS)."""
    return create_app(Settings.from_env())


def main() -> None:
    import click

    from . import options

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
                  help="Worker processes (uvicorn's); a dead one is replaced.")
    @click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
                  help="Worker threads per process, one recogniser each.")
    @click.option("--queue", "queue_size", default=4, show_default=True, type=click.IntRange(0, 10_000),
                  help="Requests that may wait for a worker; beyond that, 503 with Retry-After.")
    @options.model("ONNX model file (default: the bundled model).", name="model")
    @options.backend()
    @click.option("--max-mb", default=200.0, show_default=True, help="Upload size limit (413 past it).")
    @click.option("--max-seconds", default=1800.0, show_default=True, help="Recording length limit (422 past it).")
    @click.option("--timeout", "timeout_s", default=300.0, show_default=True, help="Time limit per request, seconds.")
    @options.voice_gate()
    def run(host, port, workers, threads, queue_size, model, backend, max_mb, max_seconds, timeout_s, voice_gate):
        """Serve mer over HTTP: POST /v1/recognize, WS /v1/live, GET /healthz, /metrics, and a page at /."""
        try:
            import uvicorn
        except ImportError:
            raise click.ClickException("mer-serve needs the [serve] extra: pip install 'mer[serve]'") from None
        settings = Settings(model, backend, threads, workers, queue_size, max_mb, max_seconds, timeout_s, voice_gate)
        os.environ["MER_SERVE_SETTINGS"] = json.dumps(asdict(settings))
        # Connections beyond this get uvicorn's own 503: uploads in progress are bounded too.
        connections = 4 * (threads + queue_size) + 8
        uvicorn.run("mer.runtime.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", timeout_graceful_shutdown=10, limit_concurrency=connections)

    run()


if __name__ == "__main__":
    main()

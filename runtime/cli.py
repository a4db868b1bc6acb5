"""`mer-infer PATH...`: emotion of each clip or audio file, as a table or as JSON lines.

A bad input gets one line on stderr naming the file and the reason; the other inputs are still
done, and the exit status is 1 if any input failed (2 for a usage or model error).
"""
from __future__ import annotations

import json
import os
import sys

import click

FUSION_CHOICES = ("lt", "it", "ia")
BACKEND_CHOICES = ("auto", "cpu", "cuda", "tensorrt")


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


def _fail(message: str) -> None:
    click.echo(f"mer-infer: error: {message}", err=True)


def _table_row(name: str, width: int, result) -> str:
    conf = result.probabilities[result.label]
    t = result.timings_ms
    faces = f"{result.faces_detected}/15"
    audio = "yes" if result.audio else "no"
    return f"{name:<{width}}  {result.label:<9}  {conf:>5.2f}  {faces:>5}  {audio:>5}  {t['total']:>8.1f}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("--model", "model_path", type=click.Path(path_type=str), help="ONNX model file (default: the bundled model).")
@click.option("--fusion", type=click.Choice(FUSION_CHOICES), help="Use the bundled model of this fusion.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="Execution backend; 'auto' picks the best that actually runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input per line.")
def main(paths: tuple[str, ...], model_path: str | None, fusion: str | None, backend: str, as_json: bool) -> None:
    """Recognise the emotion in each talking-face clip (mp4, avi, mkv, mov, webm...) or speech
    file (wav, flac, mp3...): neutral, calm, happy, sad, angry, fearful, disgust or surprised."""
    _route_native_stderr_away()
    if model_path and fusion:
        raise click.UsageError("give --model or --fusion, not both")
    from .errors import InputError, MerError
    from .recognizer import Recognizer, bundled_model

    try:
        model = model_path if model_path else bundled_model(fusion or "ia")
        recognizer = Recognizer(model, backend=backend)
    except MerError as exc:
        _fail(str(exc))
        sys.exit(2)
    except Exception as exc:  # a model file broken in a way we did not foresee: still one line
        if os.environ.get("MER_DEBUG"):
            raise
        _fail(f"{model_path or 'bundled model'}: cannot load model ({type(exc).__name__}: {exc})")
        sys.exit(2)

    width = max(4, *(len(p) for p in paths))
    if not as_json:
        click.echo(f"{'FILE':<{width}}  {'LABEL':<9}  {'PROB':>5}  {'FACES':>5}  {'AUDIO':>5}  {'TOTAL_MS':>8}")
    failures = 0
    with recognizer:
        for path in paths:
            try:
                result = recognizer.predict(path)
            except InputError as exc:
                failures += 1
                _fail(str(exc))
                continue
            except Exception as exc:  # a bug of ours: still one line, and go on with the rest
                if os.environ.get("MER_DEBUG"):
                    raise
                failures += 1
                _fail(f"{path}: internal error ({type(exc).__name__}: {exc}); set MER_DEBUG=1 for a traceback")
                continue
            if as_json:
                click.echo(json.dumps(result.to_dict()))
            else:
                click.echo(_table_row(path, width, result))
                for warning in result.warnings:
                    click.echo(f"{'':<{width}}  note: {warning}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

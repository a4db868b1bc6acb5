"""`mer-export --fusion {lt,it,ia}`: ONNX (fp32 and fp16) and, where possible, a TensorRT engine.

Prints what it wrote and how each file was checked (ONNX vs PyTorch, FP16 vs FP32).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from mer.runtime.errors import InputError


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:6.2f} MB"


def _check_inputs(spec, clip: Path | None):
    """Inputs for the parity checks: a real clip's model inputs as the runtime builds them when
    given, else seeded synthetic ones. Raises InputError for a clip that cannot be read."""
    from .onnx_export import example_inputs

    if clip is None:
        faces, mfcc = example_inputs(spec)
        return faces.numpy(), mfcc.numpy(), "seeded random faces and MFCC"
    from mer.runtime.faces import FaceCropper
    from mer.runtime.engine import clip_inputs

    made: list[FaceCropper] = []  # only for a clip with video, and after it decoded

    def cropper() -> FaceCropper:
        if not made:
            made.append(FaceCropper(spec))
        return made[0]

    try:
        faces, feats = clip_inputs(clip, spec, cropper)
    finally:
        for c in made:
            c.close()
    return faces[None], feats[None], f"features of {clip}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fusion", type=click.Choice(["lt", "it", "ia"]), required=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="mer or reference-format checkpoint (default: the bundled trained one).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("exports"), show_default=True)
@click.option("--batch", default=1, show_default=True, help="Fixed batch size of the exported graph.")
@click.option("--check-clip", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check parity on this clip's real faces and speech.")
@click.option("--untrained", is_flag=True, help="Export randomly initialised weights (for testing the path).")
def main(fusion: str, checkpoint: Path | None, out: Path, batch: int, check_clip: Path | None, untrained: bool) -> None:
    """Export a fusion model to ONNX (fp32, fp16) and a TensorRT FP16 engine where possible."""
    from mer.train import checkpoint as ckpt

    from .fp16 import convert_fp16
    from .onnx_export import export_onnx, max_abs_diff_vs_torch
    from .tensorrt_engine import available, build_engine

    if untrained and checkpoint:
        raise click.UsageError("give --checkpoint or --untrained, not both")
    try:
        if untrained:
            model, spec, trained_on = ckpt.untrained(fusion)
        else:
            source = checkpoint or ckpt.bundled_checkpoint(fusion)
            if not source.is_file():
                click.echo(f"mer-export: error: no checkpoint for {fusion!r} ({source} not found); "
                           "pass --checkpoint, or --untrained to export random weights", err=True)
                sys.exit(2)
            model, spec, trained_on = ckpt.load_checkpoint(source, fusion)
    except (ValueError, RuntimeError, OSError) as exc:
        click.echo(f"mer-export: error: {exc}", err=True)
        sys.exit(2)
    model.eval()
    try:  # before anything in OUT is written: a bad clip leaves earlier exports untouched
        faces, mfcc, what = _check_inputs(spec, check_clip)
    except InputError as exc:
        click.echo(f"mer-export: error: {exc}", err=True)
        sys.exit(1)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, fp16_path, engine_path = out / f"{fusion}.onnx", out / f"{fusion}.fp16.onnx", out / f"{fusion}.fp16.engine"

    click.echo(f"mer-export: {fusion} model ({sum(p.numel() for p in model.parameters()):,} parameters), "
               f"trained on: {trained_on}")
    export_onnx(model, spec, onnx_path, trained_on, batch)
    if batch > 1:
        import numpy as np
        faces, mfcc = np.repeat(faces, batch, 0), np.repeat(mfcc, batch, 0)
    diff = max_abs_diff_vs_torch(model, onnx_path, faces, mfcc)
    width = max(len(str(p)) for p in (onnx_path, fp16_path, engine_path))  # the summary's columns line up
    click.echo(f"  {str(onnx_path):<{width}}  {_mb(onnx_path)}  max |onnx - torch| logits = {diff:.2e}  ({what})")

    convert_fp16(onnx_path, fp16_path)
    import numpy as np
    import onnxruntime as ort

    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        ["logits"], {"faces": faces, "mfcc": mfcc})[0]
    diff16 = float(np.abs(run(fp16_path) - run(onnx_path)).max())
    click.echo(f"  {str(fp16_path):<{width}}  {_mb(fp16_path)}  max |fp16 - fp32| logits = {diff16:.2e}  (ONNX Runtime CPU)")

    ok, why = available()
    if ok:
        build_engine(onnx_path, engine_path, timing_cache=out / "timing.cache")
        click.echo(f"  {str(engine_path):<{width}}  {_mb(engine_path)}  TensorRT FP16 engine (+ {engine_path.name}.json)")
    else:
        click.echo(f"  {str(engine_path):<{width}}  skipped: {why}")
    if diff > 1e-4:
        click.echo(f"mer-export: warning: ONNX differs from PyTorch by {diff:.2e} (> 1e-4)", err=True)


if __name__ == "__main__":
    main()

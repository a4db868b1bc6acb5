"""`mer-train`: the CPU recipe that made the bundled models, and the paper's end-to-end recipe.

\b
CPU recipe (what ships; each stage resumable, each number reproducible):
    mer-train faces                       # EfficientFace trunk on FER+ (+ TFEID), 112 px
    mer-train audio                       # audio branch, 5 actor-disjoint folds over 03-24
    mer-train fusion --fusion ia          # fusion per fold: frozen trunk, speech, modality dropout
    mer-train ship --fusion ia            # one model on all of 03-24 -> train/checkpoints/ia.pt

\b
Paper recipe (needs RAVDESS video, ideally a GPU; torchrun for several):
    mer-train paper --fusion ia --data RAVDESS_DIR --preset paper
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import numpy as np

from .paths import data_dir

RUNS = Path("runs")


def _folds(preset: str, names: tuple[str, ...]):
    from .ravdess import PRESETS

    folds = PRESETS[preset]
    if not names:
        return folds
    unknown = set(names) - {f.name for f in folds}
    if unknown:
        raise click.BadParameter(f"unknown fold(s) {sorted(unknown)}; {preset} has {[f.name for f in folds]}")
    return [f for f in folds if f.name in names]


def _speech(data: Path, preset: str, spec):
    from .audio_cache import build_speech_cache
    from .ravdess import RavdessError, check_no_held_out, index_ravdess

    try:
        takes = index_ravdess(data)
    except RavdessError as exc:
        raise click.ClickException(str(exc)) from None
    if preset != "paper":  # actors 01-02 are held out unless the paper's own folds are asked for
        takes = check_no_held_out(takes)
    return build_speech_cache(takes, spec, RUNS / "cache")


def _spec(n_mfcc: int):
    from mer.runtime.spec import FeatureSpec

    return FeatureSpec(n_mfcc=n_mfcc)


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))


def _summary(name: str, accs: list[float]) -> str:
    return f"{name}: {100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f} % over {len(accs)} folds"


data_option = click.option("--data", type=click.Path(file_okay=False, path_type=Path),
                           default=lambda: str(data_dir() / "ravdess_speech_16k"), show_default="../shared/data/ravdess_speech_16k",
                           help="A RAVDESS tree (any layout).")
preset_option = click.option("--preset", type=click.Choice(["actors03-24", "paper"]), default="actors03-24", show_default=True)
fold_option = click.option("--fold", "folds", multiple=True, help="Fold name(s), e.g. test03-06 (default: all).")
mfcc_option = click.option("--n-mfcc", default=10, show_default=True)
norm_option = click.option("--audio-norm", type=click.Choice(["none", "cmn", "cmvn"]), default="none", show_default=True,
                           help="Per-utterance MFCC normalisation inside the model (the paper: none).")
speed_option = click.option("--speed", default=0.0, show_default=True,
                            help="Speed perturbation of the training speech: random factor within 1 +- SPEED.")


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "faces", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--size", default=112, show_default=True, help="Internal face resolution (224 = paper).")
@click.pass_context
def faces(ctx, out: Path, epochs: int, size: int) -> None:
    """Pretrain the face trunk on FER+ and TFEID (resumes from OUT/last.pt)."""
    from . import pretrain_faces

    ctx.invoke(pretrain_faces.main, out=out, epochs=epochs, size=size)


@main.command("eval-faces")
@click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt", show_default=True)
def eval_faces(trunk: Path) -> None:
    """Face-trunk accuracy: FER+ test split (7 emotions, majority labels, contempt dropped) and
    TFEID held-out performers (re-cropped by the runtime's face cropper)."""
    import torch

    from .face_data import load_ferplus, load_tfeid
    from .pretrain_faces import TFEID_TEST_PERFORMERS, FaceClassifier, _to_rgb112, evaluate

    blob = torch.load(trunk, map_location="cpu", weights_only=False)
    model = FaceClassifier()
    model.trunk.load_state_dict(blob["state_dict"])
    model.fc.load_state_dict(blob["fc"])
    fer = load_ferplus(data_dir() / "faces" / "ferplus.npz")
    test = fer.subset(fer.groups == "test")
    test = dataclasses.replace(test, images=_to_rgb112(test.images))
    tfeid = load_tfeid(data_dir() / "faces" / "tfeid")
    held = tfeid.subset(np.isin(tfeid.groups, TFEID_TEST_PERFORMERS))
    rows = {"ferplus_test": evaluate(model, test, blob["size"]),
            f"tfeid_performers_{'-'.join(TFEID_TEST_PERFORMERS)}": evaluate(model, held, blob["size"]),
            "trunk": str(trunk), "epoch": blob["epoch"]}
    click.echo(json.dumps(rows))


@main.command()
@data_option
@preset_option
@fold_option
@mfcc_option
@norm_option
@click.option("--epochs", default=30, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "audio", show_default=True)
@click.option("--all-actors", is_flag=True, help="Train one model on every actor at hand (03-24), last epoch kept "
                                                 "(OUT/audio-all03-24.pt: the audio start of `ship`).")
@speed_option
@click.option("--mixup", default=0.0, show_default=True, help="Mixup Beta(a, a) parameter (0: off).")
def audio(data: Path, preset: str, folds: tuple[str, ...], n_mfcc: int, audio_norm: str, epochs: int, out: Path,
          all_actors: bool, speed: float, mixup: float) -> None:
    """Audio branch alone, fold by fold; selection on each fold's validation actors."""
    from .ravdess import Fold
    from .train_audio import AudioRecipe, train_fold

    spec = _spec(n_mfcc)
    cache = _speech(data, preset, spec)
    recipe = AudioRecipe(epochs=epochs, input_norm=audio_norm, speed=speed, mixup=mixup)
    if all_actors:
        actors = tuple(range(3, 25))
        train_fold(cache, spec, Fold("all03-24", actors, actors, actors), recipe, out, log=click.echo, keep_last=True)
        click.echo(f"wrote {out / 'audio-all03-24.pt'} (scores above are on training actors: not a result)")
        return
    results = []
    for fold in _folds(preset, folds):
        done = out / f"audio-{fold.name}.json"
        if done.exists():  # resume: a finished fold is not run again
            results.append(json.loads(done.read_text()))
            continue
        results.append(train_fold(cache, spec, fold, recipe, out, log=click.echo))
        click.echo(f"{fold.name}: test accuracy {results[-1]['test']['accuracy']:.3f} (epoch {results[-1]['best_epoch']})")
    _write(out / "summary.json", [{k: r.get(k) for k in ("fold", "test_actors", "best_epoch", "test", "test_last_epoch")}
                                  for r in results])
    click.echo(_summary("audio branch", [r["test"]["accuracy"] for r in results]))
    if all("test_last_epoch" in r for r in results):
        click.echo(_summary("audio branch, last epoch", [r["test_last_epoch"]["accuracy"] for r in results]))


def _trunk_state(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise click.ClickException(f"{path}: no pretrained face trunk (run `mer-train faces` first)")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _face_features(trunk_path: Path, size: int):
    from .efficientface import EfficientFaceTemporal
    from .face_data import load_ferplus, load_tfeid
    from .face_features import load_or_extract
    from .pretrain_faces import _to_rgb112

    trunk = EfficientFaceTemporal()
    trunk.load_state_dict(_trunk_state(trunk_path), strict=False)
    cache = RUNS / "cache" / f"face-features-{trunk_path.stat().st_mtime_ns}-{size}.npz"
    sets = {}
    if not cache.exists():
        fer = load_ferplus(data_dir() / "faces" / "ferplus.npz")
        fer = dataclasses.replace(fer, images=_to_rgb112(fer.images))
        sets = {"ferplus": fer, "tfeid": load_tfeid(data_dir() / "faces" / "tfeid")}
    return load_or_extract(cache, trunk, sets, size)


@main.command()
@click.option("--fusion", type=click.Choice(["lt", "it", "ia"]), default="ia", show_default=True)
@data_option
@preset_option
@fold_option
@mfcc_option
@norm_option
@speed_option
@click.option("--epochs", default=15, show_default=True)
@click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt", show_default=True)
@click.option("--audio-init", type=click.Path(path_type=Path), default=RUNS / "audio", show_default=True,
              help="Folder of `mer-train audio` fold checkpoints to start each fold's audio branch from "
                   "(trained on the same fold's training actors); 'none': from scratch.")
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "fusion", show_default=True)
def fusion(fusion: str, data: Path, preset: str, folds: tuple[str, ...], n_mfcc: int, audio_norm: str, speed: float,
           epochs: int, trunk: Path, audio_init: Path, out: Path) -> None:
    """A fusion per fold: cached trunk features of still faces paired with speech by emotion."""
    import torch

    from .pretrain_faces import TFEID_TEST_PERFORMERS
    from .train_fusion import FacePools, FusionRecipe, train_fusion_fold

    spec = _spec(n_mfcc)
    cache = _speech(data, preset, spec)
    recipe = FusionRecipe(fusion=fusion, epochs=epochs, audio_norm=audio_norm, speed=speed)
    faces = _face_features(trunk, recipe.face_size)
    pools = FacePools.split(faces, TFEID_TEST_PERFORMERS)
    trunk_state = _trunk_state(trunk)
    results = []
    for fold in _folds(preset, folds):
        done = out / fusion / f"{fold.name}.json"
        if done.exists():
            results.append(json.loads(done.read_text()))
            continue
        audio_state = None
        if str(audio_init) != "none":
            ckpt_path = audio_init / f"audio-{fold.name}.pt"
            if not ckpt_path.is_file():
                raise click.ClickException(f"{ckpt_path}: no audio branch for this fold (run `mer-train audio`, or pass none)")
            audio_state = torch.load(ckpt_path, map_location="cpu")["state_dict"]
        _, result = train_fusion_fold(cache, faces, pools, spec, fold, recipe, trunk_state, audio_state, log=click.echo)
        _write(done, result)  # type: ignore[arg-type]
        results.append(result)
        t = result["test"]
        click.echo(f"{fold.name}: audiovisual {t['audiovisual']['accuracy']:.3f}, audio only "
                   f"{t['audio_only']['accuracy']:.3f}, video only {t['video_only']['accuracy']:.3f}")
    for mode in ("audiovisual", "audio_only", "video_only"):
        click.echo(_summary(f"{fusion} {mode}", [r["test"][mode]["accuracy"] for r in results]))
    if all("test_last_epoch" in r for r in results):
        click.echo(_summary(f"{fusion} audiovisual, last epoch",
                            [r["test_last_epoch"]["audiovisual"]["accuracy"] for r in results]))


def _confusion_table(name: str, confusion: np.ndarray) -> str:
    """Markdown confusion matrix: rows the true label, columns the predicted one, and recall."""
    from mer.runtime.spec import LABELS

    head = f"\n{name}: confusion summed over the test folds (rows true, columns predicted)\n\n"
    lines = ["| true \\ predicted | " + " | ".join(LABELS) + " | recall |", "|---|" + "---|" * (len(LABELS) + 1)]
    for label, counts in zip(LABELS, confusion):
        recall = counts[LABELS.index(label)] / max(1, counts.sum())
        lines.append(f"| {label} | " + " | ".join(str(int(c)) for c in counts) + f" | {100 * recall:.0f} % |")
    return head + "\n".join(lines)


@main.command()
@click.option("--runs", type=click.Path(path_type=Path), default=RUNS, show_default=True)
def report(runs: Path) -> None:
    """The cross-validation results table (Markdown) from the run folders of `audio` and `fusion`."""
    def cell(accs: list[float]) -> str:
        return f"{100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}" if accs else "not run"

    rows = ["| model (input) | " + " | ".join(f.name for f in _folds("actors03-24", ())) + " | mean ± std |",
            "|---|" + "---|" * 6]

    def row(label: str, accs: dict[str, float]) -> str:
        return (f"| {label} | " + " | ".join(f"{100 * accs[f.name]:.1f}" if f.name in accs else "–"
                                             for f in _folds("actors03-24", ())) + f" | {cell(list(accs.values()))} |")

    audio = [json.loads(p.read_text()) for p in sorted((runs / "audio").glob("audio-test*.json"))]
    confusions = {"audio branch alone": [r["test"]["confusion"] for r in audio]}
    rows.append(row("audio branch alone (speech)", {r["fold"]: r["test"]["accuracy"] for r in audio}))
    rows.append(row("audio branch alone, last epoch", {r["fold"]: r["test_last_epoch"]["accuracy"]
                                                       for r in audio if "test_last_epoch" in r}))
    for fusion in ("ia", "it", "lt"):
        results = [json.loads(p.read_text()) for p in sorted((runs / "fusion" / fusion).glob("test*.json"))]
        for mode, label in (("audiovisual", "speech + face"), ("audio_only", "speech, no face"),
                            ("video_only", "face, no speech")):
            rows.append(row(f"{fusion} ({label})", {r["fold"]: r["test"][mode]["accuracy"] for r in results}))
        rows.append(row(f"{fusion} (speech + face), last epoch",
                        {r["fold"]: r["test_last_epoch"]["audiovisual"]["accuracy"] for r in results
                         if "test_last_epoch" in r}))
        confusions[f"{fusion} (speech + face)"] = [r["test"]["audiovisual"]["confusion"] for r in results]
    click.echo("\n".join(rows))
    for name, mats in confusions.items():
        if mats:
            click.echo(_confusion_table(name, np.sum(mats, axis=0)))


@main.command()
@click.option("--fusion", type=click.Choice(["lt", "it", "ia"]), default="ia", show_default=True)
@data_option
@mfcc_option
@norm_option
@speed_option
@click.option("--epochs", default=15, show_default=True)
@click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt", show_default=True)
@click.option("--audio-init", type=click.Path(path_type=Path), default=RUNS / "audio" / "audio-all03-24.pt",
              show_default=True, help="Audio branch to start from (`mer-train audio --all-actors`); 'none': scratch.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: train/checkpoints/<fusion>.pt")
def ship(fusion: str, data: Path, n_mfcc: int, audio_norm: str, speed: float, epochs: int, trunk: Path,
         audio_init: Path, out: Path | None) -> None:
    """The model to bundle: trained on every actor at hand (03-24) for a fixed number of epochs."""
    from .checkpoint import bundled_checkpoint, save_checkpoint
    from .pretrain_faces import TFEID_TEST_PERFORMERS
    from .ravdess import Fold
    from .train_fusion import FacePools, FusionRecipe, train_fusion_fold

    spec = _spec(n_mfcc)
    cache = _speech(data, "actors03-24", spec)
    recipe = FusionRecipe(fusion=fusion, epochs=epochs, audio_norm=audio_norm, speed=speed)
    faces = _face_features(trunk, recipe.face_size)
    pools = FacePools.split(faces, TFEID_TEST_PERFORMERS)
    actors = tuple(range(3, 25))
    # No actor is left for selection: the epoch count comes from the cross-validation, and the
    # final epoch is kept (validation/test rows below are on training actors: not a score).
    everyone = Fold("all03-24", test=actors, val=actors, train=actors)
    audio_state = None
    if str(audio_init) != "none":
        import torch

        if not audio_init.is_file():
            raise click.ClickException(f"{audio_init}: no audio branch (run `mer-train audio --all-actors`, or pass none)")
        audio_state = torch.load(audio_init, map_location="cpu")["state_dict"]
    model, result = train_fusion_fold(cache, faces, pools, spec, everyone, recipe, _trunk_state(trunk), audio_state,
                                      log=click.echo, keep_last=True)
    out = out or bundled_checkpoint(fusion)
    trained_on = (f"RAVDESS speech actors 03-24 (16 kHz) paired by emotion with FER+ train and TFEID "
                  f"performers 01-23 faces; trunk pretrained on FER+ train + TFEID 01-23; audio branch "
                  f"{'pretrained on RAVDESS 03-24' if audio_state else 'from scratch'}; mer CPU recipe, {epochs} fusion epochs")
    save_checkpoint(out, model, spec, trained_on, history=result["history"])
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


@main.command()
@click.option("--fusion", type=click.Choice(["lt", "it", "ia"]), default="ia", show_default=True)
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="RAVDESS tree with the audiovisual takes (01-*.mp4) and their audio twins (03-*.wav).")
@preset_option
@fold_option
@click.option("--test-actors", default="", help="A custom fold instead of a preset: e.g. 3,4 (with --val-actors).")
@click.option("--val-actors", default="")
@mfcc_option
@click.option("--epochs", default=100, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--face-size", default=224, show_default=True, help="Internal face resolution (112 is 4x cheaper).")
@click.option("--trunk-init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="EfficientFace weights in the reference format (e.g. trained on AffectNet).")
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "paper", show_default=True)
def paper(fusion: str, data: Path, preset: str, folds: tuple[str, ...], test_actors: str, val_actors: str,
          n_mfcc: int, epochs: int, batch: int, face_size: int, trunk_init: Path | None, out: Path) -> None:
    """The paper's end-to-end recipe (SGD, schedule, soft-hard modality dropout), resumable."""
    from .ravdess import Fold, RavdessError, check_no_held_out, index_ravdess
    from .train_e2e import PaperRecipe, build_av_cache, train_paper_fold

    spec = _spec(n_mfcc)
    try:
        takes = index_ravdess(data)
    except RavdessError as exc:
        raise click.ClickException(str(exc)) from None
    if test_actors:
        test, val = (tuple(int(a) for a in s.split(",") if a) for s in (test_actors, val_actors))
        actors = sorted({t.actor for t in takes})
        chosen = [Fold(f"test{'-'.join(map(str, test))}", test, val,
                       tuple(a for a in actors if a not in test and a not in val))]
    else:
        chosen = _folds(preset, folds)
    if preset != "paper":
        takes = check_no_held_out(takes)
    try:
        cache = build_av_cache(takes, spec, out / "cache")
    except ValueError as exc:
        raise click.ClickException(f"{data}: {exc}") from None
    recipe = PaperRecipe(fusion=fusion, epochs=epochs, batch=batch, face_size=face_size)
    results = [train_paper_fold(cache, spec, fold, recipe, out / fusion / fold.name, trunk_init, log=click.echo)
               for fold in chosen]
    results = [r for r in results if r]
    if results:
        click.echo(_summary(f"{fusion} (paper recipe)", [r["test"]["accuracy"] for r in results]))


if __name__ == "__main__":
    main()

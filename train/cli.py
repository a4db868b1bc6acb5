"""`mer-train`: the CPU recipe that made the bundled models, and the paper's end-to-end recipe.

\b
CPU recipe (what ships; each stage resumable, each number reproducible):
    mer-train faces [--init T --video-aug 0.5]   # EfficientFace trunk on FER+ (+ TFEID), 112 px
    mer-train speech --protocol ravdess-folds --out runs/speech/folds   # audio branch, 5 RAVDESS folds
    mer-train speech --protocol loco --out runs/speech/loco             # leave one corpus out
    mer-train speech --protocol all --out runs/speech/all               # the audio branch that ships
    mer-train fusion --fusion ia                 # fusion per fold: frozen trunk, speech, modality dropout
    mer-train ship --fusion ia                   # one model on every speaker -> train/checkpoints/ia.pt
    mer-train calibrate --fusion ia              # temperature + class bias from the folds' validation actors

\b
Paper recipe (needs RAVDESS video, ideally a GPU; torchrun for several):
    mer-train paper --fusion ia --data RAVDESS_DIR --preset paper
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import click
import numpy as np

from mer.runtime.contract import DEFAULT_FUSION, FUSIONS

from .audio_cnn import INPUT_NORMS
from .camera import CONDITIONS as CAMERA_CONDITIONS
from .face_clips import STILLS
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
norm_option = click.option("--audio-norm", type=click.Choice(INPUT_NORMS), default="level", show_default=True,
                           help="Per-utterance MFCC normalisation inside the model (the paper: none; level: c0's "
                                "mean removed, blind to recording level).")
width_option = click.option("--audio-width", default=1, show_default=True,
                            help="Width multiplier of the audio branch's inner layers (the paper: 1).")
dilation_option = click.option("--audio-dilation", default=1, show_default=True,
                               help="Dilation growth of the audio branch's blocks: block i dilated by D**i (the "
                                    "paper: 1; 2 widens the receptive field from 0.3 to 0.8 s, 3 to 2 s, "
                                    "at the same cost).")
consistency_option = click.option("--consistency", default=0.0, show_default=True,
                                  help="Weight of a Jensen-Shannon term between each utterance's answers in two "
                                       "recording conditions (0: off, one condition per draw).")
seed_option = click.option("--seed", default=1, show_default=True,
                           help="Random seed (initial weights, draws, views): another seed is another ensemble member.")
speed_option = click.option("--speed", default=0.0, show_default=True,
                            help="Speed perturbation of the training speech: random factor within 1 +- SPEED.")


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "faces", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--size", default=112, show_default=True, help="Internal face resolution (224 = paper).")
@click.option("--batch", default=96, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--threads", default=0, help="torch threads (0: all cores).")
@click.option("--seed", default=1, show_default=True)
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Fine-tune this trunk (a best_trunk.pt) instead of training from scratch.")
@click.option("--video-aug", default=0.0, show_default=True,
              help="Probability scale of video degradations (blur, low resolution, JPEG, occluded mouth; 0: off).")
@click.option("--tfeid-repeat", default=1, show_default=True,
              help="TFEID training photos repeated this many times per epoch (colour faces at the runtime's framing).")
@click.option("--ema", default=0.0, show_default=True,
              help="Also keep an exponential moving average of the weights with this decay per step (0: off); "
              "each epoch the average is scored too, and kept when FER+ valid prefers it.")
@click.option("--mixup", default=0.0, show_default=True,
              help="Mix pairs of training faces and their targets, weight ~ Beta(a, a) (0: off).")
@click.option("--pack", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read the faces from this pack (python -m mer.train.face_pack) instead of ../shared; "
              "FER+ splits it lacks are not scored.")
@click.option("--device", default="cpu", show_default=True, help="torch device to train on (cpu, cuda).")
@click.option("--budget-s", default=0.0, show_default=True,
              help="Train for this many seconds instead of --epochs: the learning-rate cycle runs on the clock "
              "(no resume), for a machine lent for a fixed time.")
def faces(**options) -> None:
    """Pretrain the face trunk on FER+ and TFEID (resumes from OUT/last.pt)."""
    from . import pretrain_faces  # the trainer (and its data loaders) only when this command runs

    pretrain_faces.train(**options)


@main.command("eval-faces")
@click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt", show_default=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Score this fusion checkpoint given faces and no speech instead (calibrated; accuracy, UAR, ECE; "
              "calm counted as neutral).")
@click.option("--mirror", is_flag=True,
              help="Trunk only: each face's logits averaged with its mirror image's (the trunk-level "
              "counterpart of a fusion with mirror_faces).")
@click.option("--still", type=click.Choice(STILLS), default="views", show_default=True,
              help="How a photo is read: as the runtime shows one, 15 views of its face (moved, scaled, turned), "
                   "or as one crop (the trunk) / 15 copies of it (a fusion), as before round 19.")
def eval_faces(trunk: Path, model: Path | None, mirror: bool, still: str) -> None:
    """Face-trunk accuracy: FER+ test split (7 emotions, majority labels, contempt dropped), TFEID
    held-out performers (found and cropped by the runtime's face cropper), each photo read as the
    runtime reads a still (--still), and the same performers as moving, H.264-compressed 15-frame
    clips through the cropper (agreement across frames).
    With --model: a fusion's face-alone answer on the same three sets, through its whole graph."""
    from mer.runtime.spec import DEFAULT_SPEC

    from .face_clips import clip_agreement, face_alone_scores, views_evaluate
    from .face_data import load_ferplus, load_tfeid
    from .pretrain_faces import TFEID_TEST_PERFORMERS, _to_rgb112, evaluate

    if model is not None and mirror:
        raise click.UsageError("--mirror scores a trunk; a fusion (--model) reads faces as its own config says")
    if model is None:
        classifier, size, epoch = _trunk_classifier(trunk)
    fer = load_ferplus(data_dir() / "faces" / "ferplus.npz")
    test = fer.subset(fer.groups == "test")
    root, held_name = data_dir() / "faces" / "tfeid", f"tfeid_performers_{'-'.join(TFEID_TEST_PERFORMERS)}"
    held = load_tfeid(root, performers=TFEID_TEST_PERFORMERS)
    if still == "views":  # the runtime's views, cut from the whole photo (not from the crop above)
        held_stills = load_tfeid(root, DEFAULT_SPEC.image_size if model is not None else size,
                                 performers=TFEID_TEST_PERFORMERS, views=True).images
    else:
        held_stills = held.images
    if model is not None:
        from .checkpoint import load_checkpoint

        fusion, _, trained_on = load_checkpoint(model)
        click.echo(json.dumps({
            "ferplus_test": face_alone_scores(fusion, test.images, test.labels, as_clips=False, still=still),
            held_name: face_alone_scores(fusion, held_stills, held.labels, as_clips=False, still=still),
            "tfeid_held_out_as_video_clips": face_alone_scores(fusion, held.images, held.labels, as_clips=True),
            "model": str(model), "mirror_faces": fusion.mirror_faces, "trained_on": trained_on, "still": still}))
        return
    if still == "views":
        stills = {"ferplus_test": views_evaluate(classifier, test.images, test.labels, size, mirror=mirror),
                  held_name: views_evaluate(classifier, held_stills, held.labels, size, mirror=mirror)}
    else:
        stills = {"ferplus_test": evaluate(classifier, dataclasses.replace(test, images=_to_rgb112(test.images)), size,
                                           mirror=mirror, detail=True),
                  held_name: evaluate(classifier, held, size, mirror=mirror, detail=True)}
    rows = {**stills,
            "tfeid_held_out_as_video_clips": clip_agreement(classifier, held.images, held.labels, size,
                                                            mirror=mirror),
            "trunk": str(trunk), "epoch": epoch, "mirror": mirror, "still": still}
    click.echo(json.dumps(rows))


@main.command("eval-camera")
@click.option("--trunk", type=click.Path(path_type=Path), default=None,
              help="Score this face-trunk checkpoint (its classifier head).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Score this fusion checkpoint's face-alone answer (calibrated, calm counted as neutral).")
@click.option("--conditions", default=",".join(CAMERA_CONDITIONS), show_default=True,
              help="Camera conditions to measure (mer.train.camera.CONDITIONS).")
@click.option("--set", "faces_set", type=click.Choice(["tfeid-held-out", "ferplus-valid"]), default="tfeid-held-out",
              show_default=True, help="TFEID's held-out performers as camera frames through the cropper, or FER+ "
                                      "valid crops under the conditions of the pixels alone (for choosing settings).")
@click.option("--exposure", default=None, metavar="LOW,HIGH|off",
              help="Bring faces into this mean-luma range instead of the runtime's (off: as they come).")
def eval_camera(trunk: Path | None, model: Path | None, conditions: str, faces_set: str,
                exposure: str | None) -> None:
    """The face alone under camera conditions: TFEID's held-out performers, each photo made into the
    frame a camera would give (tilted, dim, tinted, far, blurred, noisy, compressed), found and
    cropped by the runtime's cropper; one JSON line per condition. Tilts are also cropped upright,
    as the cropper did before it levelled the eyes."""
    from mer.runtime.faces import EXPOSURE, normalise_exposure

    from .camera import CONDITIONS, FRAMING, TILTS, photometric
    from .face_clips import face_alone_scores
    from .face_data import load_ferplus, load_tfeid
    from .pretrain_faces import TFEID_TEST_PERFORMERS, _to_rgb112, evaluate

    if (trunk is None) == (model is None):
        raise click.UsageError("give one of --trunk or --model")
    names = [c.strip() for c in conditions.split(",") if c.strip()]
    allowed = [c for c in CONDITIONS if faces_set == "tfeid-held-out" or c not in FRAMING]
    unknown = [c for c in names if c not in allowed]
    if unknown or not names:
        raise click.BadParameter(f"{', '.join(unknown) or '(none)'}: not a camera condition for {faces_set}; "
                                 f"one or more of {', '.join(allowed)}", param_hint="--conditions")
    light = EXPOSURE if exposure is None else _exposure_range(exposure)
    path = trunk or model
    if trunk is not None:
        classifier, size, _ = _trunk_classifier(trunk)
        score = lambda faces: evaluate(classifier, faces, size)  # noqa: E731
    else:
        from .checkpoint import load_checkpoint

        if not model.is_file():
            raise click.ClickException(f"{model}: no such checkpoint")

        fusion = load_checkpoint(model)[0]
        # A camera frame stands for a frame of video, whose crops differ on their own: one crop per
        # frame here (copies), as the trunk is scored above, and as the card's camera table was measured.
        score = lambda faces: face_alone_scores(fusion, faces.images, faces.labels, as_clips=False,  # noqa: E731
                                                still="copies")
    if faces_set == "ferplus-valid":
        fer = load_ferplus(data_dir() / "faces" / "ferplus.npz")
        valid = fer.subset(fer.groups == "valid")
        valid = dataclasses.replace(valid, images=_to_rgb112(valid.images))
    root = data_dir() / "faces" / "tfeid"
    for name in names:
        scaled = None
        if faces_set == "ferplus-valid":
            seen = np.stack([photometric(im, name, seed=i) for i, im in enumerate(valid.images)])
            faces = dataclasses.replace(valid, images=np.stack([normalise_exposure(im, light) for im in seen]))
            # The faces the range touches (dim ones, dark-skinned and fair-skinned ones in FER+'s mix),
            # as they were and scaled: what it does to the faces it changes, the rest being unchanged.
            mask = (faces.images != seen).any(axis=(1, 2, 3))
            if mask.any():
                scaled = {"n": int(mask.sum()), "scaled": score(faces.subset(mask)),
                         "as_is": score(dataclasses.replace(valid, images=seen).subset(mask))}
        else:
            faces = load_tfeid(root, performers=TFEID_TEST_PERFORMERS, condition=name, exposure=light)
        row = {"condition": name, "what": CONDITIONS[name], "set": faces_set, "exposure": light,
               "checkpoint": str(path), **score(faces),
               "faces_found": f"{int(faces.images.any(axis=(1, 2, 3)).sum())}/{len(faces.labels)}"}
        if scaled is not None:
            row["faces_scaled"] = scaled
        if name in TILTS:
            row["upright"] = score(load_tfeid(root, performers=TFEID_TEST_PERFORMERS, condition=name, level=False,
                                              exposure=light))
        click.echo(json.dumps(row))


def _exposure_range(text: str) -> tuple[float, float] | None:
    """`--exposure LOW,HIGH` (mean luma 0-255) or `off`."""
    if text.strip().lower() == "off":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: LOW,HIGH mean luma (e.g. 110,170) or off", param_hint="--exposure") from None
    if not 0 <= low <= high <= 255:
        raise click.BadParameter(f"{text!r}: want 0 <= LOW <= HIGH <= 255", param_hint="--exposure")
    return low, high


def _trunk_classifier(path: Path):
    """A trunk checkpoint's trunk and classifier head, the face size it reads and its epoch; one line and
    exit 1 when it is missing or keeps no head (a trunk taken out of a fusion keeps none)."""
    blob = _torch_file(path, "no such trunk checkpoint")
    if "fc" not in blob:
        raise click.ClickException(f"{path}: no classifier head ('fc'); score a fusion with --model instead")
    return _face_classifier(path, blob), blob["size"], blob.get("epoch")


def _face_classifier(path: Path, blob: dict):
    """The trunk and its classifier head of a trunk checkpoint. The per-frame trunk is what is
    scored: one taken out of a fusion (`_trunk_file`) keeps no temporal head, and needs none."""
    from .fusion import TRUNK_MODULES
    from .pretrain_faces import FaceClassifier

    model = FaceClassifier()
    try:
        missing, unexpected = model.trunk.load_state_dict(blob["state_dict"], strict=False)
    except RuntimeError:  # a tensor of another shape
        missing, unexpected = [], ["(shapes differ)"]
    if unexpected or any(k.split(".")[0] in TRUNK_MODULES for k in missing):
        raise click.ClickException(f"{path}: not a face trunk of this architecture")
    model.fc.load_state_dict(blob["fc"])
    return model


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


corpora_option = click.option("--corpora", default="ravdess,tess,emodb,urdu,turev", show_default=True,
                               help="Speech corpora to train on (comma-separated; RAVDESS actors split by fold).")


def _corpora(text: str) -> tuple[str, ...]:
    from .speech_corpora import CORPORA

    names = tuple(c for c in text.split(",") if c)
    if not names or set(names) - set(CORPORA):
        raise click.BadParameter(f"corpora must be among {', '.join(CORPORA)}, got {text!r}")
    return names


def _views():
    from mer.runtime.spec import DEFAULT_SPEC

    from .speech_corpora import CORPORA, CorpusError, index_corpora
    from .speech_views import build_views

    try:  # every corpus is indexed so the cache is one; the runs choose among them
        utterances = index_corpora(data_dir(), CORPORA)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    return build_views(utterances, DEFAULT_SPEC, RUNS / "cache", log=click.echo)


def _corpus_table(rows: dict[str, dict]) -> str:
    return "\n".join(f"  {name}: accuracy {100 * r['accuracy']:.1f} %, UAR {100 * r['uar']:.1f} % (n = {r['n']})"
                     for name, r in rows.items())


@main.command()
@click.option("--protocol", type=click.Choice(["ravdess-folds", "loco", "all"]), required=True,
              help="ravdess-folds: the 5 RAVDESS actor folds, other corpora added to training; loco: leave one "
                   "corpus out, each in turn; all: one model on every corpus given (scored on the others).")
@corpora_option
@click.option("--held-out", default="", help="loco: only these held-out corpora (default: each of --corpora).")
@mfcc_option
@norm_option
@click.option("--epochs", default=32, show_default=True)
@click.option("--draws", default=4000, show_default=True, help="Utterances drawn per epoch (balanced).")
@click.option("--ravdess-share", default=0.5, show_default=True,
              help="RAVDESS's share of the draws (0: an equal share with every other corpus).")
@width_option
@dilation_option
@click.option("--average-last", default=0, show_default=True,
              help="The last model is the mean of the last N epochs' weights, batch-norm statistics measured again.")
@consistency_option
@seed_option
@fold_option
@click.option("--threads", default=0, help="torch threads (0: all cores).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
def speech(protocol: str, corpora: str, held_out: str, n_mfcc: int, audio_norm: str, epochs: int, draws: int,
           ravdess_share: float, audio_width: int, audio_dilation: int, average_last: int, consistency: float,
           seed: int, folds: tuple[str, ...], threads: int, out: Path) -> None:
    """Audio branch on several speech corpora: RAVDESS folds, leave-one-corpus-out, or all (resumable)."""
    import torch

    from .speech_corpora import CORPORA
    from .speech_views import fold_split
    from .train_speech import SpeechRecipe, train_speech

    if threads:
        torch.set_num_threads(threads)
    if not 0 <= average_last <= epochs:
        raise click.BadParameter(f"must be within 0..{epochs} (the epochs)", param_hint="--average-last")
    names = _corpora(corpora)
    views = _views()
    recipe = SpeechRecipe(n_mfcc=n_mfcc, input_norm=audio_norm, epochs=epochs, draws=draws, ravdess_share=ravdess_share,
                          width=audio_width, dilation=audio_dilation, average_last=average_last,
                          consistency=consistency, seed=seed)
    runs: list[tuple[str, np.ndarray, dict[str, np.ndarray], str | None]] = []
    if protocol == "ravdess-folds":
        for fold in _folds("actors03-24", folds):
            split = fold_split(views, fold, names)
            runs.append((fold.name, split.train, {"val": split.val, "test": split.test}, "val"))
    elif protocol == "loco":
        for held in [c for c in held_out.split(",") if c] or names:
            train = np.flatnonzero(np.isin(views.corpus, [c for c in names if c != held]))
            runs.append((f"without-{held}", train, {"test": views.where(held)}, None))
    else:
        train = np.flatnonzero(np.isin(views.corpus, names))
        runs.append(("all", train, {c: views.where(c) for c in CORPORA if c not in names}, None))
    results = {}
    for name, train, evals, select_on in runs:
        done = out / f"{name}.json"
        if done.exists():
            results[name] = json.loads(done.read_text())
            continue
        state, result = train_speech(views, train, recipe, evals, select_on, log=lambda line: click.echo(f"{name} {line}"))
        result.update(name=name, corpora=names, n_train=int(len(train)))
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, "input_norm": audio_norm, "n_mfcc": n_mfcc, "width": audio_width,
                    "dilation": audio_dilation, "fold": name,
                    "trained_on": names}, out / f"audio-{name}.pt")
        _write(done, result)  # type: ignore[arg-type]
        results[name] = result
        click.echo(f"{name}:\n{_corpus_table(result['scores'])}")
    if protocol == "ravdess-folds":
        click.echo(_summary("audio branch, RAVDESS folds", [r["scores"]["test"]["accuracy"] for r in results.values()]))
        click.echo(_summary("audio branch, RAVDESS folds, last epoch",
                            [r["last_epoch"]["test"]["accuracy"] for r in results.values()]))


@main.command("score-speech")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--corpora", default="ravdess,tess,emodb,urdu,turev", show_default=True)
def score_speech(checkpoints: tuple[Path, ...], corpora: str) -> None:
    """Accuracy and UAR per corpus of audio branches (`mer-train speech`/`audio` checkpoints) or of
    fusion checkpoints given no face (the runtime's input for speech alone), on clean speech.

    Scores a corpus a checkpoint was trained on too: read those rows as training fit, not results."""
    import torch

    from .audio_cnn import AudioCNN
    from .checkpoint import load_checkpoint
    from .metrics import summarise
    from .train_fusion import no_face_feature
    from .train_speech import logits_of

    names = _corpora(corpora)
    views = _views()
    for path in checkpoints:
        blob = _torch_file(path, "no checkpoint")
        if blob.get("format") == "mer/1":
            model, spec, _ = load_checkpoint(path)
            n_mfcc, blank = spec.n_mfcc, no_face_feature(model)

            @torch.no_grad()
            def predict(x: np.ndarray) -> np.ndarray:
                model.eval()
                return np.concatenate([model.forward_features(blank.expand(len(x[s:s + 256]) * 15, -1),
                                                              torch.from_numpy(x[s:s + 256])).argmax(1).numpy()
                                       for s in range(0, len(x), 256)])
        else:
            n_mfcc = blob.get("n_mfcc") or json.loads(blob["spec"])["n_mfcc"]
            branch = AudioCNN(n_mfcc, 8, *_branch_shape(blob))
            branch.load_state_dict(blob["state_dict"])

            def predict(x: np.ndarray) -> np.ndarray:
                return logits_of(branch, x).argmax(1)
        rows = {c: summarise(views.labels[idx], predict(views.features(idx, 0, n_mfcc)))
                for c in names for idx in [views.where(c)]}
        click.echo(f"{path}:\n{_corpus_table(rows)}")
        _write(path.with_suffix(".scores.json"), [{"checkpoint": str(path), **rows}])


def _torch_file(path: Path, missing: str) -> dict:
    """A torch checkpoint file read as a dict, or one line naming it and why not (`missing`: what
    the message calls a file that is not there)."""
    import torch

    if not path.is_file():
        raise click.ClickException(f"{path}: {missing}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle and zip errors alike: the file is not a torch checkpoint
        raise click.ClickException(f"{path}: not a torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(blob, dict):
        raise click.ClickException(f"{path}: not a checkpoint of this project (a {type(blob).__name__})")
    return blob


@functools.lru_cache(maxsize=2)
def _trunk(path: Path) -> dict:
    """A face-trunk checkpoint, read once per command (features, fusion and trained-on line use it)."""
    blob = _torch_file(path, "no pretrained face trunk (run `mer-train faces` first)")
    if "state_dict" not in blob:
        raise click.ClickException(f"{path}: not a face-trunk checkpoint (no state_dict)")
    return blob


def _trunk_state(path: Path) -> dict:
    return _trunk(path)["state_dict"]


def _trunk_note(path: Path) -> str:
    """What a trunk checkpoint says about its fine-tuning, for the model's trained-on line."""
    blob = _trunk(path)
    if not blob.get("video_aug"):
        return ""
    again = f", then once more, kept at epoch {blob['epoch']}" if blob.get("init") and "epoch" in blob else ""
    return f" (fine-tuned with video degradations{again})"


def _face_sets() -> dict:
    """The face images the trunk-feature caches are built from, in the order (and so the rows) they
    are built in: FER+ (all splits, as 112 px colour) then TFEID."""
    from .face_data import load_ferplus, load_tfeid
    from .pretrain_faces import _to_rgb112

    fer = load_ferplus(data_dir() / "faces" / "ferplus.npz")
    return {"ferplus": dataclasses.replace(fer, images=_to_rgb112(fer.images)),
            "tfeid": load_tfeid(data_dir() / "faces" / "tfeid")}


def _face_features(trunk_path: Path, size: int):
    from .efficientface import EfficientFaceTemporal
    from .face_features import load_or_extract

    trunk = EfficientFaceTemporal()
    trunk.load_state_dict(_trunk_state(trunk_path), strict=False)
    stem = RUNS / "cache" / f"face-features-{trunk_path.stat().st_mtime_ns}-{size}"
    clean, video = Path(f"{stem}.npz"), Path(f"{stem}-video.npz")
    sets = {} if clean.exists() and video.exists() else _face_sets()
    faces = load_or_extract(clean, trunk, sets, size)
    # The same images as video degrades them: what `--face-video` trains on, and every fusion run's
    # "faces degraded" test conditions.
    return dataclasses.replace(faces, video=load_or_extract(video, trunk, sets, size, video=True).feats)


def _branch_shape(blob: dict) -> tuple[str, int, int]:
    """(input_norm, width, dilation) of a `mer-train speech`/`audio` checkpoint; older ones lack the
    later keys and were built with the paper's values."""
    return blob.get("input_norm", "none"), blob.get("width", 1), blob.get("dilation", 1)


def _audio_state(path: Path, recipe) -> dict:
    """An audio branch's weights (`mer-train speech` or `mer-train audio`), checked against the recipe."""
    blob = _torch_file(path, "no audio branch (run `mer-train speech`, or pass none)")
    got = (blob.get("n_mfcc", recipe.n_mfcc), *_branch_shape(blob))
    want = (recipe.n_mfcc, recipe.audio_norm, recipe.audio_width, recipe.audio_dilation)
    if got != want:
        raise click.ClickException(f"{path}: trained with n_mfcc, norm, width, dilation {got}, not {want}")
    return blob["state_dict"]


def _audio_origin(path: Path) -> str:
    """How an audio branch file came to be, for the trained-on line: `mer-train audio-branch` notes
    the fusion model it was taken from; a `mer-train speech` branch was pretrained on the speech."""
    return _torch_file(path, "no audio branch").get("origin", "pretrained on the same speech")


def _fusion_heads(path: Path) -> tuple[dict, list]:
    """(config, heads) of a fusion checkpoint (`ship`, `combine`, a fold's <fold>-last.pt): heads[0]
    the model itself, heads[k] an ensemble's k-th member."""
    blob, fused = _fusion_checkpoint(path)
    return blob["config"], [fused, *fused.heads]


def _fusion_blob(path: Path) -> dict:
    """A fusion checkpoint file read as a dict (config and weights), or one line saying why not."""
    blob = _torch_file(path, "no fusion checkpoint")
    if "config" not in blob or "state_dict" not in blob:
        raise click.ClickException(f"{path}: not a fusion checkpoint (no config and weights)")
    return blob


def _fusion_checkpoint(path: Path):
    """(blob, model) of a fusion checkpoint file, or a one-line error saying why it is not one."""
    from .checkpoint import model_of

    blob = _fusion_blob(path)
    try:
        return blob, model_of(blob, path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _head(heads: list, member: int, path: Path, member_option: str):
    """heads[member], or a usage error naming `member_option` and the heads `path` has."""
    if not 0 <= member < len(heads):
        raise click.BadParameter(f"{path} has {len(heads)} fusion head(s): 0 to {len(heads) - 1}",
                                 param_hint=member_option)
    return heads[member]


def _head_state(path: Path, recipe, member: int = 0) -> dict:
    """A trained single fusion's weights (an ensemble's head `member`), checked against the recipe. A
    face-alone classifier is left behind: it reads its own trunk's features (refit it with `face-alone`)."""
    config, heads = _fusion_heads(path)
    got = (config["fusion"], config["n_mfcc"], config.get("audio_norm", "none"), config.get("audio_width", 1),
           config.get("audio_dilation", 1))
    want = (recipe.fusion, recipe.n_mfcc, recipe.audio_norm, recipe.audio_width, recipe.audio_dilation)
    if got != want:
        raise click.ClickException(f"{path}: a fusion of fusion, n_mfcc, norm, width, dilation {got}, not {want}")
    return {k: v for k, v in _head(heads, member, path, "--init-member").state_dict().items()
            if not k.startswith(("heads.", "face_classifier"))}


def _fusion_inputs(corpora: str, trunk: Path, recipe):
    from .pretrain_faces import TFEID_TEST_PERFORMERS
    from .train_fusion import FacePools

    names = _corpora(corpora)
    views = _views()
    faces = _face_features(trunk, recipe.face_size)
    return views, names, faces, FacePools.split(faces, TFEID_TEST_PERFORMERS), _trunk_state(trunk)


def fusion_options(audio_init_default: Path, audio_init_help: str):
    """The options `fusion` and `ship` share, folded into one `recipe` (a FusionRecipe) argument."""
    def decorate(command):
        @functools.wraps(command)
        def wrapper(fusion: str, n_mfcc: int, audio_norm: str, audio_width: int, audio_dilation: int, epochs: int,
                    draws: int, audio_lr: float, face_mismatch: float, face_video: float, tfeid_share: float,
                    consistency: float, seed: int, face_head_only: bool, **rest):
            from .train_fusion import FusionRecipe

            if face_head_only and rest["init_fusion"] is None:
                raise click.UsageError("--face-head-only needs --init-fusion (the fusion whose face head is refitted)")
            recipe = FusionRecipe(fusion=fusion, epochs=epochs, audio_norm=audio_norm, n_mfcc=n_mfcc, draws=draws,
                                  audio_width=audio_width, audio_dilation=audio_dilation, audio_lr_scale=audio_lr,
                                  face_mismatch=face_mismatch, face_video=face_video, tfeid_share=tfeid_share,
                                  consistency=consistency, seed=seed, face_head_only=face_head_only)
            return command(recipe=recipe, **rest)

        for option in reversed((
                click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True),
                corpora_option, mfcc_option, norm_option, width_option, dilation_option,
                click.option("--epochs", default=12, show_default=True),
                click.option("--draws", default=1500, show_default=True, help="Utterances drawn per epoch (balanced)."),
                click.option("--audio-lr", default=1.0, show_default=True,
                             help="The audio branch's learning rate, as a fraction of the fusion's (0: frozen)."),
                click.option("--face-mismatch", default=0.0, show_default=True,
                             help="Share of audiovisual training clips shown a face of another emotion, labelled by "
                                  "the voice (real faces are read right about half the time)."),
                click.option("--face-video", default=0.0, show_default=True,
                             help="Share of training frames shown as video degrades a face (blur, low resolution, "
                                  "compression, a covered mouth), so the fusion learns what a face is worth there."),
                click.option("--tfeid-share", default=0.0, show_default=True, type=click.FloatRange(0, 1),
                             help="Share of training clips shown one of TFEID's training performers' photos (studio "
                                  "faces, framed by the runtime's cropper) instead of a face drawn from the whole pool."),
                consistency_option, seed_option,
                click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt",
                             show_default=True),
                click.option("--audio-init", type=click.Path(path_type=Path), default=audio_init_default,
                             show_default=True, help=audio_init_help),
                click.option("--init-fusion", type=click.Path(exists=True, path_type=Path), default=None,
                             help="A trained fusion to start from, all but its face trunk (`fusion`: a run folder "
                                  "of <fold>-last.pt; `ship`: a checkpoint, --init-member picking an ensemble's head)."),
                click.option("--face-head-only", is_flag=True,
                             help="With --init-fusion: retrain only the temporal face head, on --trunk's features; "
                                  "the audio branch, attention and classifier stay as trained."))):
            wrapper = option(wrapper)
        return wrapper
    return decorate


@main.command()
@fusion_options(RUNS / "speech" / "folds", "Folder of `mer-train speech --protocol ravdess-folds` checkpoints to start "
                "each fold's audio branch from (trained on the same fold's training speakers); 'none': from scratch.")
@fold_option
@click.option("--out", type=click.Path(path_type=Path), default=RUNS / "fusion", show_default=True)
def fusion(recipe, corpora: str, folds: tuple[str, ...], trunk: Path, audio_init: Path, init_fusion: Path | None,
           out: Path) -> None:
    """A fusion per RAVDESS fold: cached trunk features of still faces paired with speech by emotion.

    Each fold trains on its training actors plus every speaker of the other corpora, selects on its
    validation actors and scores its test actors; validation and test logits are kept for calibration."""
    from .speech_views import fold_split
    from .train_fusion import train_fusion_fold

    fusion = recipe.fusion
    views, names, faces, pools, trunk_state = _fusion_inputs(corpora, trunk, recipe)
    results = []
    for fold in _folds("actors03-24", folds):
        done = out / fusion / f"{fold.name}.json"
        if done.exists():
            results.append(json.loads(done.read_text()))
            continue
        audio_state = None if str(audio_init) == "none" or init_fusion else \
            _audio_state(audio_init / f"audio-{fold.name}.pt", recipe)
        head_state = _head_state(init_fusion / f"{fold.name}-last.pt", recipe) if init_fusion else None
        done.parent.mkdir(parents=True, exist_ok=True)
        _, result, logits = train_fusion_fold(views, faces, pools, fold_split(views, fold, names), recipe, trunk_state,
                                              audio_state, log=click.echo, last_weights=out / fusion / f"{fold.name}-last.pt",
                                              head_state=head_state)
        np.savez(out / fusion / f"{fold.name}-logits.npz",
                 **{f"{part}_{key}": value for part, d in logits.items() for key, value in d.items()})
        _write(done, result)  # type: ignore[arg-type]
        results.append(result)
        t = result["test"]
        click.echo(f"{fold.name}: " + ", ".join(f"{label} {t[mode]['accuracy']:.3f}" for mode, label in _CONDITION_ROWS
                                                  if mode in t))
    for mode, _ in _CONDITION_ROWS:
        accs = [r["test"][mode]["accuracy"] for r in results if mode in r["test"]]  # older runs lack the last
        if accs:
            click.echo(_summary(f"{fusion} {mode}", accs))
    if all("test_last_epoch" in r for r in results):
        click.echo(_summary(f"{fusion} audiovisual, last epoch",
                            [r["test_last_epoch"]["audiovisual"]["accuracy"] for r in results]))


def _mirrored_evaluation_faces(trunk_path: Path, size: int, faces, pools):
    """`faces` as a model with `mirror_faces` sees the evaluation pools' images (FER+ valid, FER+
    test, TFEID held-out performers): each view's mirror image too, for every other frame of a clip.
    Only those images are passed through the trunk again (cached beside the features)."""
    from .efficientface import EfficientFaceTemporal
    from .face_features import mirror_features

    rows = np.unique(np.concatenate([ix for pool in (pools.val, pools.test) for ix in pool.values()]))
    path = RUNS / "cache" / f"face-features-{trunk_path.stat().st_mtime_ns}-{size}-mirror-eval.npz"
    cached = np.load(path) if path.exists() else None
    if cached is not None and np.array_equal(cached["rows"], rows):
        mirror = cached["mirror"]
    else:
        trunk = EfficientFaceTemporal()
        trunk.load_state_dict(_trunk_state(trunk_path), strict=False)
        parts, start = [], 0
        for faces_set in _face_sets().values():  # the rows and seed the cache was built with
            n = len(faces_set.labels)
            mine = rows[(rows >= start) & (rows < start + n)]
            parts.append(mirror_features(trunk, faces_set, size, mine - start))
            start += n
        mirror = np.concatenate(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"), rows=rows, mirror=mirror)
        path.with_suffix(".tmp.npz").replace(path)
    mirrors = np.zeros_like(faces.feats)  # zeros elsewhere: training images are never drawn here
    mirrors[rows] = mirror
    return dataclasses.replace(faces, mirror=mirrors, video=None)


@main.command("mirror-folds")
@click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True)
@click.option("--runs", "run", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A `mer-train fusion` output holding the folds' last-epoch weights (<fold>-last.pt).")
@click.option("--trunk", type=click.Path(path_type=Path), default=RUNS / "faces" / "best_trunk.pt", show_default=True,
              help="The trunk the run was trained on.")
def mirror_folds(fusion: str, run: Path, trunk: Path) -> None:
    """Each fold's last-epoch model scored on its own validation and test clips without and with the
    mirror (`calibrate --mirror-faces`). Writes RUN-mirror/<fusion>/<fold>-logits.npz, which
    `calibrate --runs` and `report` read like any run's."""
    import torch

    from .checkpoint import model_of
    from .speech_corpora import CORPORA
    from .speech_views import fold_split
    from .train_fusion import FusionRecipe, condition_logits, evaluation_sets, no_face_feature

    weights = sorted((run / fusion).glob("test*-last.pt"))
    if not weights:
        raise click.ClickException(f"{run / fusion}: no fold weights (<fold>-last.pt; `mer-train fusion` keeps them)")
    views, names, faces, pools, _ = _fusion_inputs(",".join(CORPORA), trunk, FusionRecipe())
    mirrored = _mirrored_evaluation_faces(trunk, FusionRecipe().face_size, faces, pools)
    folds = {f.name: f for f in _folds("actors03-24", ())}
    out, rows = run.parent / f"{run.name}-mirror" / fusion, {}
    out.mkdir(parents=True, exist_ok=True)
    for path in weights:
        name = path.name.removesuffix("-last.pt")
        model = model_of(torch.load(path, map_location="cpu", weights_only=False), path).eval()
        blank = no_face_feature(model)
        split = fold_split(views, folds[name], names)
        logits = {}
        for label, face_feats in (("plain", faces), ("mirror", mirrored)):
            sets, _, _ = evaluation_sets(views, face_feats, pools, split, model.config()["n_mfcc"], stand_ins=False)
            logits[label] = {f"last_{part}": {**condition_logits(model, v, a, blank), "labels": y}
                             for part, (v, a, y) in sets.items()}
        kept = np.load(run / fusion / f"{name}-logits.npz")  # the same clips as the run scored: else, say so
        if not np.allclose(kept["last_test_audiovisual"], logits["plain"]["last_test"]["audiovisual"], atol=1e-3):
            raise click.ClickException(f"{path}: does not give its run's own test logits (another trunk or data?)")
        np.savez(out / f"{name}-logits.npz", **{f"{part}_{key}": value for part, d in logits["mirror"].items()
                                                for key, value in d.items()})
        rows[name] = {label: {c: float((d["last_test"][c].argmax(1) == d["last_test"]["labels"]).mean())
                              for c in ("audiovisual", "video_only")} for label, d in logits.items()}
        click.echo(f"{name}: " + ", ".join(f"{c} {rows[name]['plain'][c]:.3f} -> {rows[name]['mirror'][c]:.3f}"
                                           for c in ("audiovisual", "video_only")))
    for c in ("audiovisual", "video_only"):
        for label in ("plain", "mirror"):
            click.echo(_summary(f"{fusion} {c}, last epoch, {label}", [r[label][c] for r in rows.values()]))
    _write(out / "mirror-folds.json", [{"run": str(run), "trunk": str(trunk), "folds": rows}])
    click.echo(f"wrote {out}")


@main.command("speech-ensemble")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
def speech_ensemble(runs: tuple[Path, ...]) -> None:
    """Audio branches of several `speech --protocol ravdess-folds` runs (other seeds or recipes) on
    each fold's test actors (clean views): each alone and their ensemble (logits averaged)."""
    from .speech_views import fold_split

    views = _views()
    rows, accs = [], []
    for fold in _folds("actors03-24", ()):
        paths = [r / f"audio-{fold.name}.pt" for r in runs]
        if not all(p.is_file() for p in paths):
            continue
        test = fold_split(views, fold, _corpora("ravdess")).test
        logits = [_branch_logits(path, views, test) for path in paths]
        y = views.labels[test]
        fold_accs = [float((lg.argmax(1) == y).mean()) for lg in logits + [np.mean(logits, axis=0)]]
        accs.append(fold_accs)
        rows.append(f"| {fold.name} | " + " | ".join(f"{100 * a:.1f}" for a in fold_accs) + " |")
    if not rows:
        raise click.ClickException(f"{', '.join(map(str, runs))}: no fold is in every run")
    a = 100 * np.array(accs)
    click.echo("\n".join([f"| fold | {' | '.join(str(r) for r in runs)} | ensemble |", "|---|" + "---|" * (len(runs) + 1),
                          *rows, "| mean ± std | " + " | ".join(f"{m:.1f} ± {d:.1f}" for m, d in zip(a.mean(0), a.std(0)))
                          + " |"]))


def _branch_logits(path: Path, views, idx: np.ndarray) -> np.ndarray:
    """Logits of a `mer-train speech` checkpoint on the clean views of `idx`."""
    import torch

    from .audio_cnn import AudioCNN
    from .train_speech import logits_of

    blob = torch.load(path, map_location="cpu", weights_only=False)
    branch = AudioCNN(blob["n_mfcc"], 8, *_branch_shape(blob))
    branch.load_state_dict(blob["state_dict"])
    return logits_of(branch, views.features(idx, 0, blob["n_mfcc"]))


@main.command("speech-report")
@click.option("--loco", type=click.Path(path_type=Path), multiple=True, default=(RUNS / "speech" / "loco",),
              show_default=True, help="`mer-train speech --protocol loco` output. Several (other seeds): their "
              "ensemble, logits averaged, scored from the checkpoints.")
@click.option("--baseline", type=click.Path(path_type=Path), multiple=True,
              default=(RUNS / "speech" / "ravdess-only" / "all.json",), show_default=True,
              help="`mer-train speech --protocol all --corpora ravdess` result. Several: their ensemble, as --loco.")
@click.option("--folds", type=click.Path(path_type=Path), default=RUNS / "speech" / "folds", show_default=True)
def speech_report(loco: tuple[Path, ...], baseline: tuple[Path, ...], folds: Path) -> None:
    """Markdown tables: leave-one-corpus-out against the RAVDESS-only branch, and the RAVDESS folds.

    One run each: the figures its training wrote (last epoch). Several: an ensemble of the runs, each
    held-out corpus scored by the mean logits of the runs' checkpoints (clean speech, as training scores)."""
    from .metrics import summarise

    helds = [{p.name.removeprefix("without-").removesuffix(".json") for p in d.glob("without-*.json")} for d in loco]
    held_out = sorted(set.intersection(*helds))  # with several runs, only the corpora each one held out
    views = _views() if len(loco) > 1 or len(baseline) > 1 else None

    def scored(runs: list[Path], held: str) -> dict | None:
        """Last-epoch test figures on `held` of runs' result files (name: theirs), None if any is missing."""
        if not all(r.is_file() for r in runs):
            return None
        if len(runs) == 1:
            result = json.loads(runs[0].read_text())["last_epoch"]
            return result.get("test", result.get(held))  # loco: "test"; all: the held-out corpus by name
        idx = views.where(held)
        ckpts = [r.parent / f"audio-{r.stem}.pt" for r in runs]
        missing = [str(c) for c in ckpts if not c.is_file()]
        if missing:
            raise click.ClickException(f"{', '.join(missing)}: no checkpoint to score the ensemble from")
        return summarise(views.labels[idx], np.mean([_branch_logits(c, views, idx) for c in ckpts], axis=0).argmax(1))

    lines = ([f"(ensembles: {len(loco)} multi-corpus runs, {len(baseline)} RAVDESS-only runs, logits averaged)\n"]
             if views is not None else [])
    lines += ["| held-out corpus | n | multi-corpus: accuracy | UAR | RAVDESS-only: accuracy | UAR | UAR gain |",
              "|---|---|---|---|---|---|---|"]
    gains = []
    for held in held_out:
        t = scored([d / f"without-{held}.json" for d in loco], held)
        b = None if held == "ravdess" else scored(list(baseline), held)
        gain = f"{100 * (t['uar'] - b['uar']):+.1f}" if b else "–"
        gains += [t["uar"] - b["uar"]] if b else []
        lines.append(f"| {held} | {t['n']} | {100 * t['accuracy']:.1f} | {100 * t['uar']:.1f} | "
                     + (f"{100 * b['accuracy']:.1f} | {100 * b['uar']:.1f} | {gain} |" if b else
                        "in-corpus: see the folds | – | – |" if held == "ravdess" else "not run | – | – |"))
    if gains:
        lines.append(f"\nmean UAR gain over {len(gains)} held-out corpora: {100 * np.mean(gains):+.1f} points")
    rows = [json.loads(p.read_text()) for p in sorted(folds.glob("test*.json"))]
    if rows:
        lines.append("\n| RAVDESS fold | " + " | ".join(r["name"] for r in rows) + " | mean ± std |")
        lines.append("|---|" + "---|" * (len(rows) + 1))
        for key, label in (("scores", "selected epoch"), ("last_epoch", "last epoch")):
            accs = [r[key]["test"]["accuracy"] for r in rows]
            lines.append(f"| {label} | " + " | ".join(f"{100 * a:.1f}" for a in accs)
                         + f" | {100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f} |")
    click.echo("\n".join(lines))


def _fold_logits(runs: tuple[Path, ...], fusion: str) -> list[dict[str, np.ndarray]]:
    """Per fold, the logits `mer-train fusion` kept (validation and test, per condition), averaged
    over `runs`: several runs of the same folds (other seeds or recipes) are an ensemble's members,
    scored on the same clips and faces (the evaluation pairs are drawn with a fixed seed)."""
    names = [sorted(p.name for p in (r / fusion).glob("test*-logits.npz")) for r in runs]
    if not names[0]:
        raise click.ClickException(f"{runs[0] / fusion}: no fold logits (run `mer-train fusion --fusion {fusion}` first)")
    if any(n != names[0] for n in names):
        raise click.ClickException(f"{', '.join(map(str, runs))}: the runs hold different folds ({names})")
    folds = []
    for name in names[0]:
        blobs = [np.load(r / fusion / name) for r in runs]
        keys = [k for k in blobs[0].files if all(k in b.files for b in blobs)]  # older runs kept fewer
        fold = {"name": name.removesuffix("-logits.npz")}
        for k in keys:
            if k.endswith("labels"):
                if any(not np.array_equal(b[k], blobs[0][k]) for b in blobs):
                    raise click.ClickException(f"{name}: the runs' {k} differ (not the same folds)")
                fold[k] = blobs[0][k]
            else:
                fold[k] = np.mean([b[k] for b in blobs], axis=0)
        folds.append(fold)
    return folds


def _face_alone_temperature(model, fer_path: Path) -> tuple[float, dict]:
    """The face-alone temperature, fitted on FER+ *valid* stills (the fusion's validation faces, in
    their natural mix; calm counted as neutral: calibrate.py says why), each shown as the runtime
    shows a photo (15 views of the face: a still's confidence is what the runtime serves), and its
    row: ECE and accuracy before and after on FER+ valid and on FER+ test (never fitted on)."""
    from .calibrate import ece, face_scores, fit_temperature, softmax
    from .face_clips import face_alone_logits
    from .face_data import load_ferplus

    if not fer_path.exists():
        raise click.ClickException(f"{fer_path}: not found (the face alone is calibrated on FER+ valid; set MER_SHARED)")
    fer = load_ferplus(fer_path)
    sets = {g: fer.subset(fer.groups == g) for g in ("valid", "test")}
    logits = {g: face_alone_logits(model, f.images, as_clips=False, calibrated=False)[0] for g, f in sets.items()}
    t = fit_temperature(logits["valid"], sets["valid"].labels, calm_as_neutral=True)
    row: dict = {"temperature": round(t, 4), "fitted_on": f"FER+ valid stills (n {len(sets['valid'].labels)}) as "
                                                        "15 views each, calm counted as neutral"}
    for g, f in sets.items():
        before, after = face_scores(softmax(logits[g])), face_scores(softmax(logits[g] / t))
        row[f"ferplus_{g}"] = {"ece_before": ece(before, f.labels), "ece_after": ece(after, f.labels),
                               "accuracy": float((after.argmax(1) == f.labels).mean()), "n": int(len(f.labels))}
    return t, row


@main.command()
@click.option("--fusion", type=click.Choice(["lt", "it", "ia"]), default="ia", show_default=True)
@click.option("--runs", "runs_", type=click.Path(path_type=Path), multiple=True, default=(RUNS / "fusion",),
              show_default=True, help="`mer-train fusion` output: the folds' validation and test logits. "
              "Several: an ensemble's members (`combine`), their logits averaged.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Checkpoint to write the temperatures into (default: the bundled train/checkpoints/<fusion>.pt).")
@click.option("--figure", type=click.Path(path_type=Path), default=None, help="Reliability diagram PNG to write.")
@click.option("--face-alone-only", is_flag=True,
              help="Refit the face alone's temperature only; speech keeps the checkpoint's (no fold logits needed).")
@click.option("--mirror-faces/--no-mirror-faces", default=None,
              help="Turn on (off) the test-time mirror: every other face frame read as its mirror image (the "
                   "same trunk work). Set here, before the face-alone temperature is fitted on it. Default: as "
                   "the checkpoint has it.")
@click.option("--speech-from", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --face-alone-only: take the temperatures with speech from this checkpoint (the model a "
                   "`--face-head-only` refit started from, whose speech path it kept) instead of keeping its own.")
def calibrate(fusion: str, runs_: tuple[Path, ...], checkpoint: Path | None, figure: Path | None,
              face_alone_only: bool, mirror_faces: bool | None, speech_from: Path | None) -> None:
    """Fit a temperature per modality condition and fold it into the checkpoint: with speech, on the
    folds' validation actors (last epoch, as shipped); the face alone, on FER+ valid faces. Reports
    ECE and accuracy before and after on validation and test."""
    import torch

    from .calibrate import ece, face_labels, face_scores, fit_temperature, plot_reliability, softmax
    from mer.runtime.contract import CONDITIONS
    from mer.runtime.spec import LABELS

    from .checkpoint import bundled_checkpoint, model_of

    path = checkpoint or bundled_checkpoint(fusion)
    blob = _fusion_blob(path)
    if mirror_faces is not None:  # the key is absent when off (MerModel.config)
        blob["config"].pop("mirror_faces", None)
        if mirror_faces:
            blob["config"]["mirror_faces"] = True
    temps = blob["state_dict"].get("temperature", torch.ones(len(CONDITIONS))).tolist()
    rows = dict(blob.get("calibration") or {})
    if speech_from is not None:
        if not face_alone_only:
            raise click.UsageError("--speech-from goes with --face-alone-only (otherwise speech is fitted on --runs)")
        donor = _torch_file(speech_from, "no fusion checkpoint")
        if "temperature" not in donor.get("state_dict", {}):
            raise click.ClickException(f"{speech_from}: not a calibrated fusion checkpoint (no temperatures)")
        for i, c in enumerate(CONDITIONS):
            if c != "video_only":
                temps[i] = float(donor["state_dict"]["temperature"][i])
                rows[c] = {**(donor.get("calibration") or {}).get(c, {}), "taken_from": str(speech_from)}
    face_t, face = _face_alone_temperature(model_of(blob, path), data_dir() / "faces" / "ferplus.npz")
    face["mirror_faces"] = bool(blob["config"].get("mirror_faces"))
    rows["video_only"] = face
    temps[CONDITIONS.index("video_only")] = face_t
    click.echo(f"video_only: T = {face_t:.3f} ({face['fitted_on']}); ECE FER+ valid "
               f"{face['ferplus_valid']['ece_before']:.3f} -> {face['ferplus_valid']['ece_after']:.3f}, "
               f"FER+ test {face['ferplus_test']['ece_before']:.3f} -> {face['ferplus_test']['ece_after']:.3f}")
    if not face_alone_only:
        blobs = _fold_logits(runs_, fusion)

        def pooled(part: str, key: str) -> np.ndarray:
            return np.concatenate([b[f"{part}_{key}"] for b in blobs])

        curves = {}
        for i, c in enumerate(CONDITIONS):
            t = face_t if c == "video_only" else fit_temperature(pooled("last_val", c), pooled("last_val", "labels"))
            temps[i] = t
            row = rows[c] if c == "video_only" else {"temperature": round(t, 4), "fitted_on": "the folds' validation actors"}
            for part in ("last_val", "last_test"):
                logits, labels = pooled(part, c), pooled(part, "labels")
                row[part] = {"ece_before": ece(softmax(logits), labels), "ece_after": ece(softmax(logits / t), labels),
                             "accuracy": float((logits.argmax(1) == labels).mean()), "n": int(len(labels)),
                             "per_fold_ece_after": [ece(softmax(b[f"{part}_{c}"] / t), b[f"{part}_labels"])
                                                    for b in blobs]}
                if c == "video_only":  # the face alone as it is fitted and read: calm counted as neutral
                    merged = face_labels(labels)
                    row[part] |= {"ece_before_calm_as_neutral": ece(face_scores(softmax(logits)), merged),
                                  "ece_after_calm_as_neutral": ece(face_scores(softmax(logits / t)), merged),
                                  "accuracy_calm_as_neutral":
                                      float((face_scores(softmax(logits / t)).argmax(1) == merged).mean())}
            rows[c] = row
            test, labels = pooled("last_test", c), pooled("last_test", "labels")
            if c == "video_only":  # drawn as it is fitted and read
                curves[f"{c} (calm counted as neutral)"] = (face_scores(softmax(test)), face_scores(softmax(test / t)),
                                                            face_labels(labels))
            else:
                curves[c] = (softmax(test), softmax(test / t), labels)
            v, s = row["last_val"], row["last_test"]
            click.echo(f"{c}: T = {t:.3f}; ECE validation {v['ece_before']:.3f} -> {v['ece_after']:.3f}, test "
                       f"{s['ece_before']:.3f} -> {s['ece_after']:.3f} (test accuracy {s['accuracy']:.3f}, n = {s['n']})")
            if c == "video_only":
                click.echo(f"video_only, calm counted as neutral: ECE validation {v['ece_before_calm_as_neutral']:.3f} -> "
                           f"{v['ece_after_calm_as_neutral']:.3f}, test {s['ece_before_calm_as_neutral']:.3f} -> "
                           f"{s['ece_after_calm_as_neutral']:.3f} (test accuracy {s['accuracy_calm_as_neutral']:.3f})")
        runs = runs_[0]
        _write(runs / fusion / ("calibration.json" if len(runs_) == 1 else f"calibration-ensemble{len(runs_)}.json"),
               [{"fusion": fusion, "runs": [str(r) for r in runs_], "folds": [b["name"] for b in blobs], **rows}])
        if figure is not None:
            figure.parent.mkdir(parents=True, exist_ok=True)
            plot_reliability(curves, figure, f"{fusion}: RAVDESS test actors of 5 folds (speech + held-out faces), "
                                             f"before and after calibration")
            click.echo(f"wrote {figure}")
    blob["state_dict"]["temperature"] = torch.tensor(temps, dtype=torch.float32)
    blob["state_dict"]["class_bias"] = torch.zeros(len(CONDITIONS), len(LABELS))
    blob["calibration"] = rows
    torch.save(blob, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    click.echo(f"wrote temperatures {[round(t, 3) for t in temps]} into {path} (class biases 0)")


def _without(confusion: list[list[int]], label: int) -> float:
    """Accuracy with one true class left out (the face cannot tell calm from neutral)."""
    cm = np.delete(np.asarray(confusion), label, axis=0)
    return float(sum(cm[i, j] for i, j in enumerate(k for k in range(cm.shape[1]) if k != label)) / cm.sum())


def _confusion_table(name: str, confusion: np.ndarray) -> str:
    """Markdown confusion matrix: rows the true label, columns the predicted one, and recall."""
    from mer.runtime.spec import LABELS

    head = f"\n{name}: confusion summed over the test folds (rows true, columns predicted)\n\n"
    lines = ["| true \\ predicted | " + " | ".join(LABELS) + " | recall |", "|---|" + "---|" * (len(LABELS) + 1)]
    for label, counts in zip(LABELS, confusion):
        recall = counts[LABELS.index(label)] / max(1, counts.sum())
        lines.append(f"| {label} | " + " | ".join(str(int(c)) for c in counts) + f" | {100 * recall:.0f} % |")
    return head + "\n".join(lines)


# The fusion's test conditions (train_fusion's result keys) and how the report names them.
_CONDITION_ROWS = (("audiovisual", "speech + face"), ("audio_only", "speech, no face"), ("video_only", "face, no speech"),
                   ("audiovisual_face_disagrees", "speech + face, 30 % of faces another emotion"),
                   ("audiovisual_faces_degraded", "speech + face, every frame degraded as video"),
                   ("video_only_faces_degraded", "face degraded as video, no speech"))
# Where each row's test logits (last epoch) are kept in a fold's logits file: (part, condition).
_LOGITS_OF = {"audiovisual": ("last_test", "audiovisual"), "audio_only": ("last_test", "audio_only"),
              "video_only": ("last_test", "video_only"),
              "audiovisual_face_disagrees": ("last_test_disagrees", "audiovisual"),
              "audiovisual_faces_degraded": ("last_test_degraded", "audiovisual"),
              "video_only_faces_degraded": ("last_test_degraded", "video_only")}


@main.command()
@click.option("--runs", type=click.Path(path_type=Path), default=RUNS, show_default=True)
@click.option("--speech", type=click.Path(path_type=Path), default=None,
              help="`mer-train speech --protocol ravdess-folds` output (default: RUNS/speech/folds).")
@click.option("--fusions", type=click.Path(path_type=Path), default=None,
              help="`mer-train fusion` output (default: RUNS/fusion).")
@click.option("--ensemble", type=click.Path(path_type=Path), multiple=True,
              help="`mer-train fusion` outputs of the same folds (repeat): rows for their ensemble (logits averaged).")
def report(runs: Path, speech: Path | None, fusions: Path | None, ensemble: tuple[Path, ...]) -> None:
    """The cross-validation results table (Markdown) from the run folders of `speech` and `fusion`."""
    def cell(accs: list[float]) -> str:
        return f"{100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}" if accs else "not run"

    rows = ["| model (input) | " + " | ".join(f.name for f in _folds("actors03-24", ())) + " | mean ± std |",
            "|---|" + "---|" * 6]

    def row(label: str, accs: dict[str, float]) -> str:
        return (f"| {label} | " + " | ".join(f"{100 * accs[f.name]:.1f}" if f.name in accs else "–"
                                             for f in _folds("actors03-24", ())) + f" | {cell(list(accs.values()))} |")

    audio = [json.loads(p.read_text()) for p in sorted((speech or runs / "speech" / "folds").glob("test*.json"))]
    confusions = {"audio branch alone": [r["scores"]["test"]["confusion"] for r in audio]}
    rows.append(row("audio branch alone (speech)", {r["name"]: r["scores"]["test"]["accuracy"] for r in audio}))
    rows.append(row("audio branch alone, last epoch", {r["name"]: r["last_epoch"]["test"]["accuracy"] for r in audio}))
    for fusion in ("ia", "it", "lt"):
        results = [json.loads(p.read_text()) for p in sorted(((fusions or runs / "fusion") / fusion).glob("test*.json"))]
        for mode, label in _CONDITION_ROWS:
            rows.append(row(f"{fusion} ({label})", {r["split"]: r["test"][mode]["accuracy"] for r in results
                                                    if mode in r["test"]}))
        rows.append(row(f"{fusion} (face, no speech), calm excluded",
                        {r["split"]: _without(r["test"]["video_only"]["confusion"], 1) for r in results}))
        for mode, label in _CONDITION_ROWS:
            rows.append(row(f"{fusion} ({label}), last epoch (as shipped)",
                            {r["split"]: r["test_last_epoch"][mode]["accuracy"] for r in results
                             if mode in r.get("test_last_epoch", {})}))
        confusions[f"{fusion} (speech + face)"] = [r["test"]["audiovisual"]["confusion"] for r in results]
        if ensemble and all((e / fusion).is_dir() for e in ensemble):
            folds = _fold_logits(ensemble, fusion)
            for mode, label in _CONDITION_ROWS:
                part, condition = _LOGITS_OF[mode]
                rows.append(row(f"{fusion}, ensemble of {len(ensemble)} ({label}), last epoch",
                                {f["name"]: float((f[f"{part}_{condition}"].argmax(1) == f[f"{part}_labels"]).mean())
                                 for f in folds if f"{part}_{condition}" in f}))
    click.echo("\n".join(rows))
    for name, mats in confusions.items():
        if mats:
            click.echo(_confusion_table(name, np.sum(mats, axis=0)))


@main.command()
@fusion_options(RUNS / "speech" / "all" / "audio-all.pt",
                "Audio branch to start from (`mer-train speech --protocol all`); 'none': scratch.")
@click.option("--init-member", default=0, show_default=True, help="With --init-fusion: which head of an ensemble.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: train/checkpoints/<fusion>.pt")
def ship(recipe, corpora: str, trunk: Path, audio_init: Path, init_fusion: Path | None, init_member: int,
         out: Path | None) -> None:
    """The model to bundle: trained on every speaker at hand for a fixed number of epochs."""
    from mer.runtime.spec import DEFAULT_SPEC

    from .checkpoint import bundled_checkpoint, save_checkpoint
    from .speech_views import SpeechSplit
    from .train_fusion import train_fusion_fold

    head_state = _head_state(init_fusion, recipe, init_member) if init_fusion else None  # before the data: fail fast
    views, names, faces, pools, trunk_state = _fusion_inputs(corpora, trunk, recipe)
    everyone = np.flatnonzero(np.isin(views.corpus, names))
    # No speaker is left for selection: the epoch count comes from the cross-validation, and the
    # final epoch is kept (the validation/test rows are on training speakers: not a score).
    split = SpeechSplit("all", everyone, views.where("ravdess"), views.where("ravdess"))
    audio_state = None if str(audio_init) == "none" or init_fusion else _audio_state(audio_init, recipe)
    if init_fusion:
        audio_note = (f"as in fusion head {init_member} of {init_fusion}, "
                      + ("which is kept but for its temporal face head, retrained on this trunk" if recipe.face_head_only
                         else "where this fusion started"))
    else:
        audio_note = _audio_origin(audio_init) if audio_state else "from scratch"
        if audio_state and recipe.audio_frozen:
            audio_note += ", kept frozen"
    model, result, _ = train_fusion_fold(views, faces, pools, split, recipe, trunk_state, audio_state,
                                         log=click.echo, keep_last=True, head_state=head_state)
    out = out or bundled_checkpoint(recipe.fusion)
    trained_on = _ship_note(recipe, names, trunk, audio_note)
    save_checkpoint(out, model, dataclasses.replace(DEFAULT_SPEC, n_mfcc=recipe.n_mfcc), trained_on, history=result["history"])
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def _ship_note(recipe, names: list[str], trunk: Path, audio_note: str) -> str:
    """The trained-on line of a `ship` model: its speech, faces, trunk, audio branch and recipe."""
    return (f"speech: {', '.join(names)} (RAVDESS actors 03-24 only), each utterance under random recording "
            f"conditions, paired by emotion with FER+ train and TFEID performers 01-23 faces; trunk pretrained "
            f"on FER+ train + TFEID 01-23{_trunk_note(trunk)}; audio branch {audio_note}; "
            f"mer CPU recipe, {recipe.epochs} fusion epochs of {recipe.draws} draws"
            f"{f', audio branch dilated {recipe.audio_dilation}**i' if recipe.audio_dilation != 1 else ''}"
            f"{f', audio branch at {recipe.audio_lr_scale:g}x the learning rate' if recipe.audio_lr_scale not in (0, 1) else ''}"
            f"{f', {recipe.face_mismatch:.0%} of audiovisual clips with a face of another emotion' if recipe.face_mismatch else ''}"
            f"{f', recording-condition consistency {recipe.consistency:g}' if recipe.consistency else ''}"
            f"{f', {recipe.face_video:.0%} of face frames degraded as video' if recipe.face_video else ''}"
            f"{f', {recipe.tfeid_share:.0%} of clips shown a TFEID face' if recipe.tfeid_share else ''}")


@main.command("audio-branch")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--member", default=0, show_default=True,
              help="Which fusion head of an ensemble (`combine`'s order: 0 is the first member).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
def audio_branch(model: Path, member: int, out: Path) -> None:
    """One fusion model's audio branch as an `--audio-init` file, so `ship` or `fusion` can refit what
    reads a new face trunk around a branch that is already trained (with `--audio-lr 0`: frozen)."""
    import torch

    config, heads = _fusion_heads(model)
    head = _head(heads, member, model, "--member")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": head.audio_model.state_dict(), "input_norm": config.get("audio_norm", "none"),
                "n_mfcc": config["n_mfcc"], "width": config.get("audio_width", 1),
                "dilation": config.get("audio_dilation", 1),
                "origin": f"taken from fusion head {member} of {model}, trained on the same speech"},
               out)
    click.echo(f"wrote {out}: the audio branch of fusion head {member} of {model}")


@main.command("face-alone")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trunk", type=click.Path(path_type=Path), default=None,
              help="The face trunk inside MODEL as a checkpoint file, whose cached features to fit on "
                   "(default: MODEL's own, written once to runs/trunks/).")
@click.option("--epochs", default=6, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def face_alone(model: Path, trunk: Path | None, epochs: int, out: Path) -> None:
    """Give MODEL a face-alone classifier: a clip with a face and no speech is then read by a linear
    classifier over its frames' trunk features (fitted here on FER+ train and TFEID 01-23, clean and
    degraded as video), its log-probabilities mixed with the fusion head's at the share FER+ valid
    prefers. Speech conditions are untouched. The face-alone temperature is reset to 1: run
    `mer-train calibrate --face-alone-only` on OUT next."""
    import torch

    from mer.runtime.contract import CONDITIONS

    from . import face_classifier
    from .checkpoint import model_of
    from .fusion import trunk_only

    if out.resolve() == model.resolve():
        raise click.BadParameter(f"{out} is MODEL: write the new model elsewhere", param_hint="--out")
    blob, fused = _fusion_checkpoint(model)
    inside = fused.visual_model.state_dict()
    if trunk is None:
        trunk = _trunk_file(inside, blob["config"]["face_size"], model)
    own = trunk_only(_trunk_state(trunk))
    if not own or any(k not in inside or not torch.equal(v, inside[k]) for k, v in own.items()):
        raise click.ClickException(f"{trunk}: not the face trunk inside {model}")
    fc = face_classifier.fit(_face_features(trunk, blob["config"]["face_size"]), epochs=epochs)
    blob["config"]["face_classifier"] = True
    blob["state_dict"] |= {"face_classifier.weight": fc.weight.detach().clone(),
                           "face_classifier.bias": fc.bias.detach().clone(), "face_classifier_share": torch.ones(())}
    share, table = _face_classifier_share(model_of(blob, out), data_dir() / "faces" / "ferplus.npz")
    blob["state_dict"]["face_classifier_share"] = torch.tensor(share)
    if "temperature" in blob["state_dict"]:
        blob["state_dict"]["temperature"][CONDITIONS.index("video_only")] = 1.0
    (blob.get("calibration") or {}).pop("video_only", None)
    blob["face_classifier"] = {"share": share, "chosen_on": "FER+ valid stills, mean of accuracy and UAR "
                                                            "(calm counted as neutral)", "candidates": table}
    blob["trained_on"] += (f"; the face alone also read by a linear classifier over the trunk's features ({epochs} "
                           f"epochs on FER+ train and TFEID performers 01-23, clean and degraded as video), "
                           f"{share:.0%} of its answer")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, out.with_suffix(".tmp"))
    out.with_suffix(".tmp").replace(out)
    for row in table:
        click.echo(f"  classifier share {row['share']:.2f}: FER+ valid accuracy {row['accuracy']:.3f}, "
                   f"UAR {row['uar']:.3f}")
    click.echo(f"wrote {out}: a face-alone classifier on {model}'s trunk, share {share:.2f}; its face-alone "
               f"temperature reset to 1 (next: mer-train calibrate --face-alone-only --checkpoint {out})")


def _trunk_file(visual_state: dict, size: int, model: Path) -> Path:
    """A fusion's face trunk as a trunk checkpoint, named by its weights and written once, so its
    cached features (keyed by the file) are computed once however many models share it."""
    import hashlib

    import torch

    from .fusion import trunk_only

    state = trunk_only(visual_state)
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:12]
    path = RUNS / "trunks" / f"trunk-{digest}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, "size": size, "note": f"the face trunk inside {model}"}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        click.echo(f"wrote {path}: the face trunk inside {model}")
    return path


def _face_classifier_share(model, fer_path: Path, shares=(0.0, 0.25, 0.5, 0.75, 1.0)) -> tuple[float, list[dict]]:
    """The face classifier's share of the face-alone answer that FER+ valid stills read best (the mean
    of accuracy and UAR, calm counted as neutral: accuracy alone would favour the classifier, which
    learnt FER+'s label mix and finds its rare fear and disgust less often than the fusion head)."""
    from .calibrate import face_labels, face_scores, softmax
    from .face_clips import face_alone_ends
    from .face_data import load_ferplus
    from .metrics import summarise

    if not fer_path.exists():
        raise click.ClickException(f"{fer_path}: not found (the face classifier's share is chosen on FER+ valid)")
    fer = load_ferplus(fer_path)
    valid = fer.subset(fer.groups == "valid")
    head, classifier = face_alone_ends(model, valid.images)  # the graph mixes their log-probabilities
    labels = face_labels(valid.labels)
    table = []
    for share in shares:
        scores = summarise(labels, face_scores(softmax(share * classifier + (1 - share) * head)).argmax(1))
        table.append({"share": share, "accuracy": scores["accuracy"], "uar": scores["uar"]})
    best = max(table, key=lambda r: (r["accuracy"] + r["uar"]) / 2)
    return best["share"], table


@main.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The ensemble checkpoint (then `mer-train calibrate --checkpoint` it on the members' fold runs).")
def combine(members: tuple[Path, ...], out: Path) -> None:
    """One ensemble model of fusion checkpoints trained alone (`ship`, other seeds or recipes) on
    the same face trunk: the trunk runs once, the fusion heads' logits are averaged."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .fusion import combine as combine_models

    if len(members) < 2:
        raise click.BadParameter("needs two members or more", param_hint="MEMBERS")
    if out.resolve() in [m.resolve() for m in members]:
        raise click.BadParameter(f"{out} is a member: write the ensemble elsewhere", param_hint="--out")
    loaded = []
    for m in members:
        try:
            loaded.append(load_checkpoint(m))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    specs = {spec for _, spec, _ in loaded}
    if len(specs) != 1:
        raise click.ClickException(f"{', '.join(map(str, members))}: members were trained on different features")
    try:
        model = combine_models([m for m, _, _ in loaded])
    except ValueError as exc:
        raise click.ClickException(f"{', '.join(map(str, members))}: {exc}") from None
    lines = [t for _, _, t in loaded]
    trained_on = f"an ensemble of {len(members)} fusion heads on one face trunk, each trained alone " + (
        f"(its own seed) on: {lines[0]}" if len(set(lines)) == 1 else f"on: {' | '.join(lines)}")
    save_checkpoint(out, model, specs.pop(), trained_on, members=[str(m) for m in members])
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(members)} heads, uncalibrated")


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

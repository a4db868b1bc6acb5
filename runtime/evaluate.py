"""`mer-eval`: how right the model is on *your* labelled clips, and a copy of it calibrated to them.

The bundled models' figures come from RAVDESS speakers, FER+ and TFEID faces. A user's footage is
none of these, and no one temperature serves every source: the face alone is calibrated on FER+
faces (ECE 0.02 there) and over-confident on another studio's (0.18; MODEL_CARD, *Confidence*).
So the runtime can measure itself on clips a user labels, per modality condition as the graph
feeds them (face and voice, voice only, face only), and fit the temperatures again on them.

Labels come from (any mix):
- a folder whose sub-folders are named by emotion (`clips/angry/a.mp4`, `clips/spk1/happy/b.wav`),
- files named as RAVDESS names them (`01-01-05-01-01-01-12.mp4`: emotion 05 angry, actor 12),
- a CSV with a header `file,label` and optionally `group` (the speaker), files relative to it;
  with `start,end` (seconds) too, a row labels that stretch of a recording, and every timeline
  window centred in it is scored (emotion over time, as `mer-infer --timeline` gives it).
Label names are ours or common synonyms (anger, happiness, fear, surprise, ANG, HAP...).

Calibration never changes a label: the rewritten model divides its logits by the new temperature
of the condition instead of the old one. The ECE it reports after fitting is cross-fitted (each clip
scored by a temperature fitted without it; by speaker where speakers are known), the one figure of
the three that says how the new model will do on clips it has not seen.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from . import options
from .calibration import ece, face_labels, face_scores, fit_temperature, softmax
from .contract import CONDITIONS, Meta, set_metadata
from .errors import InputError, MerError, ModelError, printable
from .metrics import confusion, summarise
from .spec import LABELS

# Names a label is given in the field's corpora and tools -> ours (lower-cased before lookup).
SYNONYMS: dict[str, str] = {label: label for label in LABELS} | {
    "neu": "neutral", "cal": "calm", "calmness": "calm",
    "hap": "happy", "happiness": "happy", "joy": "happy", "happy_": "happy",
    "sadness": "sad", "ang": "angry", "anger": "angry", "mad": "angry",
    "fea": "fearful", "fear": "fearful", "afraid": "fearful", "scared": "fearful",
    "dis": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "sur": "surprised", "surprise": "surprised", "ps": "surprised",
}
# RAVDESS: modality-channel-emotion-intensity-statement-repetition-actor; emotion 01..08 is LABELS' order.
RAVDESS_NAME = re.compile(r"^\d\d-\d\d-(0[1-8])-\d\d-\d\d-\d\d-(\d\d)$")
FOLDS = 5            # cross-fitting folds (fewer when there are fewer speakers)
MIN_CLIPS = 30       # a condition with fewer clips keeps its temperature: too few to fit one


class LabelError(MerError):
    """Clips whose labels cannot be read: one line naming the source and the reason."""


@dataclass(frozen=True)
class Labelled:
    path: str
    label: str
    group: str | None = None  # the speaker, where known: cross-fitting keeps a speaker in one fold
    start: float | None = None  # a labelled stretch of a recording (seconds): its timeline windows
    end: float | None = None


def canonical(name: str) -> str | None:
    """Our label for a label name, or None."""
    return SYNONYMS.get(name.strip().lower())


def _from_name(path: Path) -> tuple[str, str] | None:
    """(label, actor) of a RAVDESS-named file."""
    m = RAVDESS_NAME.match(path.stem)
    return (LABELS[int(m.group(1)) - 1], f"actor{m.group(2)}") if m else None


def _labelled_file(path: Path, root: Path | None) -> Labelled:
    """A file's label: the innermost folder under `root` named by an emotion, else a RAVDESS name."""
    parts = path.parent.relative_to(root).parts if root is not None else (path.parent.name,)
    for part in reversed(parts):
        if label := canonical(part):
            ravdess = _from_name(path)
            return Labelled(str(path), label, ravdess[1] if ravdess else None)
    if ravdess := _from_name(path):
        return Labelled(str(path), *ravdess)
    raise LabelError(f"{printable(path)}: cannot tell its emotion: put it in a folder named by it "
                     f"({', '.join(LABELS)}), name it as RAVDESS does, or list it in a CSV (file,label)")


def _from_csv(path: Path) -> list[Labelled]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"{printable(path)}: cannot read it as a CSV ({exc})") from None
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise LabelError(f"{printable(path)}: " + ("no rows under its header" if rows == [] and _header(path)
                         else "want a header with columns file,label (and optionally group, start, end)"))
    out = []
    for line, row in enumerate(rows, start=2):
        if not (row["file"] or "").strip():
            raise LabelError(f"{printable(path)}, line {line}: no file named")
        label = canonical(row["label"] or "")
        if label is None:
            raise LabelError(f"{printable(path)}, line {line}: {row['label']!r} is not an emotion "
                             f"({', '.join(LABELS)} or a synonym)")
        start, end = _stretch(row.get("start"), row.get("end"), f"{printable(path)}, line {line}")
        out.append(Labelled(str(path.parent / row["file"]), label, (row.get("group") or "").strip() or None,
                            start, end))
    return out


def _header(path: Path) -> bool:
    """Whether a CSV's first line names the columns file and label."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {"file", "label"} <= set(next(csv.reader(f), []))


def _stretch(start: str | None, end: str | None, where: str) -> tuple[float | None, float | None]:
    """A CSV row's `start,end` in seconds (both or neither)."""
    start, end = (start or "").strip(), (end or "").strip()
    if not start and not end:
        return None, None
    try:
        a, b = float(start), float(end)
    except ValueError:
        raise LabelError(f"{where}: start and end must both be seconds, got {start!r}, {end!r}") from None
    if not (0 <= a < b < float("inf")):
        raise LabelError(f"{where}: want 0 <= start < end, got {start}, {end}")
    return a, b


def labelled_clips(paths: tuple[str, ...] | list[str], notes: list[str] | None = None) -> list[Labelled]:
    """Every labelled clip named by `paths` (folders searched recursively, CSVs read), in order;
    what a folder's walk skipped is added to `notes`."""
    from .cli import expand  # the same walk (hidden and non-media entries skipped) as mer-infer's
    from .source import MEDIA_SUFFIXES

    out: list[Labelled] = []
    for p in paths:
        path = Path(p)
        if path.suffix.lower() == ".csv" and path.is_file():
            out += _from_csv(path)
        elif path.is_dir():
            files, skipped = expand((p,))
            if notes is not None:
                notes += skipped
            out += [_labelled_file(Path(f), path) for f in files if Path(f).suffix.lower() in MEDIA_SUFFIXES]
        elif not path.exists():
            raise LabelError(f"{printable(p)}: no such file or folder")
        else:
            out.append(_labelled_file(path, None))
    if not out:
        raise LabelError(f"{', '.join(map(printable, paths))}: no labelled media files")
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
def condition_of(faces_detected: int, audio: bool) -> str:
    """The condition the graph fed (MerModel.condition): no face found -> the crops are zeros."""
    return "audio_only" if faces_detected == 0 else ("audiovisual" if audio else "video_only")


def raw_logits(probs: np.ndarray, conditions: np.ndarray, temperature: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The logits before calibration, up to a constant per row (which no softmax sees): the graph
    gave log p = z / T + b - logsumexp, so z = (log p - b) * T."""
    t = temperature[conditions][:, None]
    return (np.log(np.clip(probs, 1e-300, None)) - bias[conditions]) * t


def summary(probs: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy, UAR over the emotions present, ECE, mean confidence; and the accuracy with calm and
    neutral taken as one (a face cannot tell them apart, and most sets have no calm)."""
    if not len(truth):
        return {"clips": 0}
    pred = probs.argmax(1)
    scores = summarise(truth, pred, len(LABELS))
    return {"clips": int(len(truth)), "accuracy": scores["accuracy"], "uar": scores["uar"],
            "ece": ece(probs, truth), "confidence": float(probs.max(1).mean()),
            "accuracy_calm_as_neutral": float((face_labels(pred) == face_labels(truth)).mean())}


def folds_of(groups: list[str | None], k: int = FOLDS) -> np.ndarray | None:
    """A fold per clip, a group's clips (a speaker's, a recording's windows) always in one fold; a
    clip without a group is a group of its own. None when there are fewer than two groups."""
    named = [g if g is not None else f"\0clip{i}" for i, g in enumerate(groups)]
    names = sorted(set(named))
    if len(names) < 2:
        return None
    index = {g: i for i, g in enumerate(names)}
    return np.array([index[g] % min(k, len(names)) for g in named])


def cross_fitted(z: np.ndarray, truth: np.ndarray, folds: np.ndarray, calm_as_neutral: bool = False) -> np.ndarray:
    """Each clip's probabilities under a temperature fitted on the other folds."""
    out = np.zeros_like(z)
    for f in np.unique(folds):
        held = folds == f
        out[held] = softmax(z[held] / fit_temperature(z[~held], truth[~held], calm_as_neutral))
    return out


def fit_conditions(z: np.ndarray, truth: np.ndarray, conds: np.ndarray, groups: list[str | None],
                   t_before: np.ndarray, min_clips: int = MIN_CLIPS) -> dict[str, dict]:
    """Per condition with at least `min_clips` clips: the fitted temperature, and ECE before (as
    the model is), after (in-sample) and cross-fitted. The face alone is fitted and scored with
    calm counted as neutral, as training fits it (train/calibrate.py): a face cannot tell them apart."""
    out = {}
    for i, name in enumerate(CONDITIONS):
        sel = conds == i
        if sel.sum() < min_clips:
            continue
        merged = name == "video_only"
        zs, ys = z[sel], (face_labels(truth[sel]) if merged else truth[sel])
        score = (lambda p: ece(face_scores(p), ys)) if merged else (lambda p: ece(p, ys))  # noqa: E731
        t = fit_temperature(zs, ys, calm_as_neutral=merged)
        kept = [g for g, s in zip(groups, sel) if s]
        folds = folds_of(kept)
        crossed = None if folds is None else cross_fitted(zs, ys, folds, merged)
        out[name] = {"temperature": t, "clips": int(sel.sum()), "calm_as_neutral": merged,
                     "ece_before": score(softmax(zs / t_before[i])), "ece_after": score(softmax(zs / t)),
                     "ece_cross_fitted": None if crossed is None else score(crossed),
                     "cross_fitted_probs": crossed,  # (clips, labels) for the plot; not in the JSON
                     "folds": None if folds is None else int(len(np.unique(folds))),
                     "by_group": all(g is not None for g in kept)}
    return out


# ---------------------------------------------------------------------------------------------
# Rewriting a model's temperatures
def _temperature_tensor(proto, old: list[float]):
    """The graph's (3,) float initializer holding the temperatures its metadata states, gathered by
    the condition (MerModel.calibrated: logits / temperature[condition]); None unless exactly one."""
    from onnx import TensorProto, numpy_helper

    gathered = {i for n in proto.graph.node if n.op_type in ("Gather", "GatherND") for i in n.input[:1]}
    hits = [init for init in proto.graph.initializer
            if init.name in gathered and list(init.dims) == [len(CONDITIONS)]
            and init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
            and np.allclose(numpy_helper.to_array(init).astype(np.float64), old, rtol=2e-3, atol=0)]
    return hits[0] if len(hits) == 1 else None


def check_recalibratable(model: Path) -> None:
    """Refuse, before any clip is run, a model whose temperatures cannot be rewritten."""
    if model.suffix == ".engine":
        raise ModelError(model, "a TensorRT engine cannot be recalibrated: recalibrate its ONNX file, "
                                "then build the engine from that")


def recalibrate(src: Path, dst: Path, temperatures: dict[str, float], note: dict) -> None:
    """Write a copy of ONNX model `src` to `dst` whose graph divides by `temperatures` (condition ->
    T; the others keep theirs), with its metadata saying so. Never overwrites: `dst` must not exist."""
    import onnx
    from onnx import numpy_helper

    check_recalibratable(src)
    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    old = json.loads(meta.get(Meta.TEMPERATURE, "null") or "null")
    if not isinstance(old, dict) or set(old) != set(CONDITIONS):
        raise ModelError(src, f"no per-condition temperatures in its metadata ({Meta.TEMPERATURE})")
    init = _temperature_tensor(proto, [old[c] for c in CONDITIONS])
    if init is None:
        raise ModelError(src, "cannot find the temperatures in its graph (not exported by mer-export?)")
    dtype = numpy_helper.to_array(init).dtype
    stored = np.array([temperatures.get(c, old[c]) for c in CONDITIONS], dtype=dtype)  # FP16 rounds them
    init.CopyFrom(numpy_helper.from_array(stored, init.name))
    set_metadata(proto, {Meta.TEMPERATURE: json.dumps({c: round(float(t), 6) for c, t in zip(CONDITIONS, stored)}),
                         Meta.RECALIBRATED_ON: json.dumps(note, sort_keys=True)})
    _write_new(dst, proto.SerializeToString())


def _write_new(dst: Path, data: bytes) -> None:
    """`data` to a file that does not exist yet, whole or not at all: written beside it under a
    fresh name, then linked into place (a link fails if `dst` appeared meanwhile); where links are
    not supported, created exclusively and written."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links (exFAT, some network shares)
            with open(dst, "xb") as f:
                try:
                    f.write(data)
                except BaseException:
                    dst.unlink(missing_ok=True)
                    raise
    finally:
        os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# mer-eval
def _scored(rec, clip: Labelled | list[Labelled], hop: float | None, stop=None) -> list[tuple[Labelled, object]]:
    """(what was labelled, the runtime's Result) for a clip (its one window), or for the labelled
    stretches of one recording (every timeline window centred in one; the recording is the group
    where no speaker is given, so cross-fitting keeps its windows together)."""
    if isinstance(clip, Labelled):
        return [(clip, rec.predict(clip.path))]
    out = []
    for result in rec.timeline(clip[0].path, hop):
        if stop is not None and stop.is_set():
            break
        centre = (result.window[0] + result.window[1]) / 2
        for seg in clip:
            if seg.start <= centre < seg.end:
                out.append((Labelled(seg.path, seg.label, seg.group or seg.path, *result.window), result))
                break
    return out


def _units(clips: list[Labelled]) -> list[Labelled | list[Labelled]]:
    """Clips one by one; the labelled stretches of a recording together, where its first one was."""
    units, stretches = [], {}
    for clip in clips:
        if clip.start is None:
            units.append(clip)
        elif clip.path in stretches:
            stretches[clip.path].append(clip)
        else:
            stretches[clip.path] = [clip]
            units.append(stretches[clip.path])
    return units


def measure(rec, clips: list[Labelled], model_name: str = "", hop: float | None = None,
             stop=None) -> tuple[dict, list[tuple[Labelled, int, np.ndarray]]]:
    """Run every clip (every labelled stretch's windows) through `rec` (a Recognizer): the report
    (`mer-eval --json`'s, without calibration), and (what was labelled, condition index,
    probabilities) of each clip or window scored. `stop` (an Event) ends it early."""
    kept, failed, t0 = [], 0, time.perf_counter()
    units = _units(clips)
    for i, unit in enumerate(units):
        if stop is not None and stop.is_set():
            break
        clip = unit if isinstance(unit, Labelled) else unit[0]
        try:
            scored = _scored(rec, unit, hop, stop)
        except InputError as exc:
            failed += 1
            _say("error", str(exc))
            continue
        except Exception as exc:  # a bug of ours: one line, and go on with the rest (as mer-infer does)
            if os.environ.get("MER_DEBUG"):
                raise
            failed += 1
            _say("error", f"{printable(clip.path)}: internal error ({type(exc).__name__}: {exc}); "
                          "set MER_DEBUG=1 for a traceback")
            continue
        kept += [(item, CONDITIONS.index(condition_of(result.faces_detected, result.audio)),
                  np.array([result.probabilities[k] for k in LABELS])) for item, result in scored]
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{i + 1}/{len(units)}")
    if sys.stderr.isatty():
        sys.stderr.write("\r")
    if not kept:
        raise InputError(", ".join(sorted({c.path for c in clips}))[:200],
                         "nothing scored (no clip could be read, or no window centred in a labelled stretch)")
    p, y, c = _arrays(kept)
    report = {"model": model_name, "fusion": rec.info.fusion, "clips": len(y),
              "windows_of_stretches": sum(k[0].start is not None for k in kept), "failed": failed,
              "interrupted": bool(stop is not None and stop.is_set()),
              "seconds": round(time.perf_counter() - t0, 1),
              "conditions": {"all": summary(p, y)} | {name: summary(p[c == i], y[c == i])
                                                      for i, name in enumerate(CONDITIONS)},
              "confusion": confusion(y, p.argmax(1), len(LABELS)).tolist()}
    return report, kept


def _arrays(kept) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([k[2] for k in kept]), np.array([LABELS.index(k[0].label) for k in kept]),
            np.array([k[1] for k in kept]))


def _model_calibration(metadata: dict) -> tuple[np.ndarray, np.ndarray]:
    """(temperature (3,), class bias (3, 8)) as a model's metadata states them (1 and 0 if absent)."""
    temps = json.loads(metadata.get(Meta.TEMPERATURE) or "{}")
    biases = json.loads(metadata.get(Meta.CLASS_BIAS) or "{}")
    return (np.array([float(temps.get(c, 1.0)) for c in CONDITIONS]),
            np.array([[float(biases.get(c, {}).get(k, 0.0)) for k in LABELS] for c in CONDITIONS]))


def _calibrate(rec, model: Path, kept, report: dict, min_clips: int) -> dict[str, dict]:
    """Fit each condition's temperature (fit_conditions) and add its row to `report`. A model with a
    class bias is refused: the fit is of temperatures alone (the bundled models' biases are 0)."""
    p, y, c = _arrays(kept)
    temperature, bias = _model_calibration(rec.info.metadata)
    if np.any(bias != 0):
        raise ModelError(model, "carries a class bias: mer-eval --calibrate refits temperatures of models without one")
    fitted = fit_conditions(raw_logits(p, c, temperature, bias), y, c, [k[0].group for k in kept], temperature,
                            min_clips)
    report["calibration"] = {name: {**{k: v for k, v in row.items() if k != "cross_fitted_probs"},
                                    "temperature_before": float(temperature[CONDITIONS.index(name)])}
                             for name, row in fitted.items()}
    return fitted


def _write_checked(rec, model: Path, out: Path, kept, fitted: dict[str, dict], report: dict, sources: list[str]) -> None:
    """Write `out` with the fitted temperatures, then check it (_check); a file that fails its
    check, or could not be checked, is not left behind."""
    note = {"clips": {n: r["clips"] for n, r in fitted.items()}, "sources": sources, "from_model": model.name,
            "date": time.strftime("%Y-%m-%d")}
    recalibrate(model, out, {n: r["temperature"] for n, r in fitted.items()}, note)
    try:
        report["checked"] = _check(rec, model, out, kept, {CONDITIONS.index(n) for n in fitted})
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    report["written"] = str(out)


def _check(rec, model: Path, out: Path, kept, conditions: set[int]) -> dict:
    """Run the old and the new model on real inputs in each refitted condition (a clip's own
    faces and MFCC, the other modality zeroed as the runtime zeroes it): the new logits must be the
    old ones with the new temperature in place of the old."""
    from .backends import load_model
    from .recognizer import run_batched

    faces = mfcc = None
    for path in list(dict.fromkeys(k[0].path for k in kept))[:20]:  # real inputs of each modality
        f, m = rec.inputs(path)
        faces = f if faces is None and f.any() else faces
        mfcc = m if mfcc is None and m.any() else mfcc
        if faces is not None and mfcc is not None:
            break
    old, new = load_model(model, "cpu"), load_model(out, "cpu")
    t_old, bias = _model_calibration(old.info.metadata)
    t_new, _ = _model_calibration(new.info.metadata)
    worst, checked = 0.0, []
    for i in sorted(conditions):
        need_face, need_voice = CONDITIONS[i] != "audio_only", CONDITIONS[i] != "video_only"
        if (need_face and faces is None) or (need_voice and mfcc is None):
            continue  # none of the first clips has that modality: nothing real to check it on
        f = faces if need_face else np.zeros(rec.spec.faces_shape, np.uint8)
        m = mfcc if need_voice else np.zeros(rec.spec.mfcc_shape, np.float32)
        before, after = run_batched(old, f[None], m[None])[0], run_batched(new, f[None], m[None])[0]
        want = (before - bias[i]) * t_old[i] / t_new[i] + bias[i]
        worst = max(worst, float(np.abs(after - want).max() / max(1.0, np.abs(want).max())))
        checked.append(CONDITIONS[i])
    if worst > (2e-2 if new.precision == "fp16" else 1e-4):
        raise ModelError(out, f"the rewritten model does not give the old logits rescaled (off by {worst:.2g})")
    return {"conditions": checked, "max_relative_difference": worst}


def _plot(kept, crossed: dict[str, np.ndarray | None], path: Path, title: str) -> None:
    """Reliability diagrams, one per condition fed: the model as it is and, after --calibrate, the
    cross-fitted temperatures (what new clips will see). The face alone with calm counted as neutral."""
    from .calibration import plot_reliability

    p, y, c = _arrays(kept)
    curves = {}
    for i, name in enumerate(CONDITIONS):
        sel = c == i
        if not sel.any():
            continue
        merged = name == "video_only"
        before, after = p[sel], crossed.get(name)
        if merged:
            before, after = face_scores(before), None if after is None else face_scores(after)
        curves[name + (" (calm as neutral)" if merged else "") + f", {int(sel.sum())} clips"] = \
            (before, after, face_labels(y[sel]) if merged else y[sel])
    plot_reliability(curves, path, title, after_tag="recalibrated, cross-fitted")


def _say(kind: str, message: str) -> None:
    from .cli import _say as say

    say(kind, message, prog="mer-eval")


def _pct(x: float | None) -> str:
    return "   -" if x is None else f"{100 * x:5.1f}"


def _table(report: dict) -> list[str]:
    lines = [f"{'CONDITION':<12} {'CLIPS':>5} {'ACC %':>6} {'UAR %':>6} {'ECE':>6} {'CONF':>5}  ACC % (calm = neutral)"]
    for name, s in report["conditions"].items():
        if s["clips"]:
            lines.append(f"{name:<12} {s['clips']:>5} {_pct(s['accuracy']):>6} {_pct(s['uar']):>6} "
                         f"{s['ece']:6.3f} {s['confidence']:5.2f}  {_pct(s['accuracy_calm_as_neutral'])}")
    used = [i for i, label in enumerate(LABELS) if any(report["confusion"][i]) or any(r[i] for r in report["confusion"])]
    lines.append("confusion (rows: the truth; columns: the answer)")
    lines.append(" " * 10 + "".join(f"{LABELS[j][:7]:>8}" for j in used))
    lines += [f"{LABELS[i]:<10}" + "".join(f"{report['confusion'][i][j]:>8}" for j in used) for i in used]
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1)
@options.model("ONNX model file or TensorRT engine to measure (default: the bundled model).")
@options.fusion()
@options.backend()
@options.voice_gate()
@options.hop("CSV rows with start,end: seconds between timeline windows (default 0.96).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--calibrate", "calibrate_to", metavar="OUT.onnx",
              help="Fit the temperatures on these clips and write a copy of the model that uses them.")
@click.option("--min-clips", type=click.IntRange(2), default=MIN_CLIPS, show_default=True,
              help="--calibrate: a condition with fewer clips keeps the model's temperature.")
@click.option("--plot", "plot_path", metavar="PNG", help="Write reliability diagrams (confidence against accuracy).")
def main(paths, model_path, fusion, backend, voice_gate, hop, as_json, calibrate_to, min_clips, plot_path) -> None:
    """Measure the model on labelled clips: accuracy, UAR, calibration (ECE) and the confusion
    matrix, per condition (face and voice, voice only, face only). PATHS: folders whose
    sub-folders are named by emotion, RAVDESS-named files, or CSVs (file,label[,group][,start,end]:
    with start,end, the timeline windows centred in that stretch of a recording)."""
    from .cli import _finish, _route_native_stderr_away

    _route_native_stderr_away()
    options.check_model(model_path, fusion)
    options.check_hop(hop)
    if not paths:
        raise click.UsageError("give labelled clips: a folder of emotion-named folders, RAVDESS-named files or a CSV")
    out = Path(calibrate_to) if calibrate_to else None
    if out is not None and (out.exists() or out.suffix != ".onnx"):
        raise click.UsageError(f"--calibrate {calibrate_to}: " + ("exists; give a new file (nothing is overwritten)"
                                                                  if out.exists() else "want an .onnx file name"))
    from .recognizer import Recognizer, bundled_model

    try:
        notes: list[str] = []
        clips = labelled_clips(paths, notes)
        for note in notes:
            _say("note", note)
        model = Path(model_path) if model_path else bundled_model(fusion or "ia")
        if out is not None:
            check_recalibratable(model)
        rec = Recognizer(model, backend=backend, voice_gate=voice_gate)
    except MerError as exc:
        _say("error", str(exc))
        _finish(2)
    crossed: dict[str, np.ndarray | None] = {}  # after --calibrate: the plot's second curve
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish the clip in hand, report, fit nothing
    with rec:
        try:
            report, kept = measure(rec, clips, str(model), hop, stop)
        except MerError as exc:
            _say("error", str(exc))
            _finish(1)
        code = 130 if report["interrupted"] else (1 if report["failed"] else 0)
        if out is not None and report["interrupted"]:
            _say("note", f"interrupted: {out} not written (a calibration needs every clip)")
        elif out is not None:
            try:
                fitted = _calibrate(rec, model, kept, report, min_clips)
                crossed = {name: row["cross_fitted_probs"] for name, row in fitted.items()}
                if fitted:
                    _write_checked(rec, model, out, kept, fitted, report, list(paths))
            except (MerError, OSError) as exc:
                _say("error", f"not written: {exc}")
                code = 2
            if stop.is_set() and out.exists():  # Ctrl-C while fitting or checking
                out.unlink()
                report.pop("written", None)
                code = 130
            elif "written" not in report and code == 0:  # no condition had enough clips
                code = 2
    if plot_path:
        try:
            _plot(kept, crossed, Path(plot_path), f"mer-eval {model.name}: {', '.join(paths)}"[:90])
            report["plot"] = plot_path
        except (OSError, ValueError) as exc:
            _say("error", f"{plot_path}: cannot write the plot ({exc})")
            code = code or 2
    if as_json:
        print(json.dumps(report, allow_nan=False))
    else:
        stretches = f", {report['windows_of_stretches']} of them windows of labelled stretches" \
            if report["windows_of_stretches"] else ""
        print(f"{report['clips']} clips{stretches} ({report['failed']} failed"
              f"{', interrupted' if report['interrupted'] else ''}), {rec.info.fusion} model {model.name}, "
              f"{report['seconds']} s")
        print("\n".join(_table(report)))
        for name, row in report.get("calibration", {}).items():
            groups = "by speaker or recording" if row["by_group"] else "by speaker or recording where given, else by clip"
            cross = (f"; cross-fitted {row['ece_cross_fitted']:.3f} over {row['folds']} folds {groups}"
                     if row["ece_cross_fitted"] is not None else "; not cross-fitted (one speaker)")
            merged = " (calm counted as neutral)" if row["calm_as_neutral"] else ""
            print(f"calibrated {name}: T {row['temperature_before']:.3f} -> {row['temperature']:.3f}; ECE{merged} "
                  f"{row['ece_before']:.3f} -> {row['ece_after']:.3f}{cross}")
        if out is not None:
            skipped = [n for n in CONDITIONS if n not in report.get("calibration", {}) and report["conditions"][n]["clips"]]
            if skipped:
                print(f"kept the model's temperature for {', '.join(skipped)} (fewer than {min_clips} clips)")
            if "written" in report:
                print(f"wrote {out}: use it with --model {out}")
            elif not report.get("calibration"):
                print(f"nothing written: no condition has {min_clips} clips")
        if "plot" in report:
            print(f"wrote {plot_path}")
    _finish(code)


if __name__ == "__main__":
    main()

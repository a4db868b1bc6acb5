"""What a timeline looks like to a person: segments, a CSV row per window, a chart."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .spec import LABELS


@dataclass
class Segment:
    start: float
    end: float
    label: str
    confidence: float  # mean probability of the label over the segment's windows
    windows: int


def segments(records: list[dict], duration: float | None = None) -> list[Segment]:
    """Consecutive windows with the same label merged. Each window speaks for the time nearest its
    centre (halfway to its neighbours' centres), so segments tile the recording without overlap."""
    if not records:
        return []
    centres = [(r["window"][0] + r["window"][1]) / 2 for r in records]
    bounds = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:])]
    bounds.append(max(duration or 0.0, records[-1]["window"][1]))
    out: list[Segment] = []
    for i, r in enumerate(records):
        conf = r["probabilities"][r["label"]]
        if out and out[-1].label == r["label"]:
            seg = out[-1]
            seg.confidence = (seg.confidence * seg.windows + conf) / (seg.windows + 1)
            seg.end, seg.windows = bounds[i + 1], seg.windows + 1
        else:
            out.append(Segment(bounds[i], bounds[i + 1], r["label"], conf, 1))
    return out


CSV_COLUMNS = ["file", "start", "end", "label", "confidence", *(f"p_{name}" for name in LABELS),
               "faces_detected", "audio", "warnings"]


def csv_row(record: dict) -> dict:
    return {"file": record["file"], "start": record["window"][0], "end": record["window"][1],
            "label": record["label"], "confidence": round(record["probabilities"][record["label"]], 4),
            **{f"p_{k}": round(v, 4) for k, v in record["probabilities"].items()},
            "faces_detected": record["faces_detected"], "audio": record["audio"],
            "warnings": "; ".join(record.get("warnings", []))}


class CsvWriter:
    """One row per window, flushed as it comes (a killed run keeps every finished row). The file
    is created at the first row, so an input that fails leaves an existing file untouched."""

    def __init__(self, path: Path):
        self.path, self.file, self.writer = Path(path), None, None

    def write(self, record: dict) -> None:
        if self.file is None:
            self.file = open(self.path, "w", newline="", encoding="utf-8")
            self.writer = csv.DictWriter(self.file, CSV_COLUMNS)
            self.writer.writeheader()
        self.writer.writerow(csv_row(record))
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def plot(records: list[dict], path: Path, title: str = "") -> None:
    """Probability of each emotion over time (window centres), the segments' labels shaded, and
    the windows without a face or without audio marked under the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no windows to plot")
    cmap = plt.get_cmap("tab10")
    colours = {name: cmap(i) for i, name in enumerate(LABELS)}
    t = [(r["window"][0] + r["window"][1]) / 2 for r in records]
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
    for seg in segments(records):
        ax.axvspan(seg.start, seg.end, color=colours[seg.label], alpha=0.12, lw=0)
        ax.text((seg.start + seg.end) / 2, 1.02, seg.label, ha="center", va="bottom", fontsize=7,
                color=colours[seg.label], clip_on=False)
    for name in LABELS:
        ax.plot(t, [r["probabilities"][name] for r in records], color=colours[name], lw=1.6, label=name)
    no_face = [x for x, r in zip(t, records) if r["faces_detected"] == 0]
    no_audio = [x for x, r in zip(t, records) if not r["audio"]]
    if no_face:
        ax.plot(no_face, [-0.06] * len(no_face), "v", color="black", ms=5, label="no face", clip_on=False)
    if no_audio:
        ax.plot(no_audio, [-0.11] * len(no_audio), "x", color="crimson", ms=5, label="no audio", clip_on=False)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(r["window"][1] for r in records))
    ax.set_xlabel("time (s), at each window's centre")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9, pad=14)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Results files (JSON lines): what mer-infer --out and mer-batch append to and resume from
def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a JSON-lines file; a line cut by a kill mid-write is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # its file is simply done again
            if isinstance(record, dict):
                yield record


def recorded(records: Iterable[dict]) -> tuple[set[str], dict[str, set[float]]]:
    """Whole files done, and timeline windows done (by start) per file. Error records do not
    count, so failed files are tried again."""
    whole: set[str] = set()
    windows: dict[str, set[float]] = {}
    for record in records:
        if not record.get("file") or record.get("error") is not None:
            continue
        if record.get("timeline"):
            windows.setdefault(record["file"], set()).add(round(record["window"][0], 3))
        else:
            whole.add(record["file"])
    return whole, windows


def ends_mid_line(path: Path) -> bool:
    """A file whose last line a kill cut short: the next record must start on a new line."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"

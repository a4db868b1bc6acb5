"""A face-training pack: FER+ and TFEID as the trunk trainer reads them, in one portable file.

Why: `mer-train faces` needs `../shared` and MediaPipe (TFEID is re-cropped by the runtime's own
cropper); a GPU machine may have neither, and a transfer to it may be size-limited. The pack holds
the faces already prepared, compressed image by image:

- FER+ usable faces (as `load_ferplus` keeps them): 48×48 grey, **lossless** WebP, with their
  vote distributions and split; the splits to keep are chosen (the test split can stay behind and
  be scored where the data is).
- TFEID: the runtime cropper's 112×112 colour crops, JPEG at `tfeid_quality` (the trainer's own
  video degradations compress far harder than this), with labels and performer ids.

    python -m mer.train.face_pack cache/faces.pack.npz --splits train,valid
    mer-train faces --pack cache/faces.pack.npz --device cuda ...
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .face_data import FaceSet, load_ferplus, load_tfeid
from .paths import data_dir

FORMAT = 1


def _encode(images: np.ndarray, ext: str, params: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images -> (concatenated encoded bytes, end offsets): one flat array each, no pickling."""
    import cv2

    chunks = []
    for im in images:
        ok, data = cv2.imencode(ext, im if im.ndim == 2 else im[:, :, ::-1], params)
        if not ok:
            raise RuntimeError(f"could not encode a face as {ext}")
        chunks.append(data.ravel())
    return np.concatenate(chunks), np.cumsum([len(c) for c in chunks])


def _decode(data: np.ndarray, ends: np.ndarray, colour: bool) -> np.ndarray:
    import cv2

    starts = np.concatenate([[0], ends[:-1]])
    flag = cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE
    images = [cv2.imdecode(data[s:e], flag) for s, e in zip(starts, ends)]
    return np.stack([im[:, :, ::-1] for im in images] if colour else images)


def shared_faces() -> tuple[FaceSet, FaceSet]:
    """FER+ and TFEID (through the runtime cropper) from `../shared`; ValueError, in one line, when absent."""
    faces = data_dir() / "faces"
    for need in (faces / "ferplus.npz", faces / "tfeid" / "labels.csv"):
        if not need.is_file():
            raise ValueError(f"{need}: not found (the face data lives in ../shared, or set MER_SHARED)")
    return load_ferplus(faces / "ferplus.npz"), load_tfeid(faces / "tfeid")


def write(out: Path, splits: tuple[str, ...] = ("train", "valid", "test"), tfeid_quality: int = 95) -> dict:
    """Build the pack from `../shared` (FER+ and TFEID through the runtime cropper); returns its sizes."""
    import cv2

    fer, tfeid = shared_faces()
    fer = fer.subset(np.isin(fer.groups, splits))
    fer_data, fer_ends = _encode(fer.images, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
    tf_data, tf_ends = _encode(tfeid.images, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, tfeid_quality])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
        np.savez(fh, format=FORMAT, fer_data=fer_data, fer_ends=fer_ends, fer_targets=fer.targets,
                 fer_labels=fer.labels, fer_groups=fer.groups.astype(str), tfeid_data=tf_data, tfeid_ends=tf_ends,
                 tfeid_targets=tfeid.targets, tfeid_labels=tfeid.labels, tfeid_groups=tfeid.groups.astype(str),
                 tfeid_quality=tfeid_quality)
    tmp.replace(out)
    return {"ferplus": {s: int((fer.groups == s).sum()) for s in splits}, "ferplus_bytes": int(fer_data.size),
            "tfeid": int(len(tfeid.labels)), "tfeid_bytes": int(tf_data.size), "file_bytes": out.stat().st_size}


def read(path: Path) -> tuple[FaceSet, FaceSet]:
    """(FER+ grey 48×48, TFEID RGB 112×112 crops) as `load_ferplus` / `load_tfeid` give them."""
    try:
        blob = np.load(path)
        found = int(blob["format"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # not an .npz, or not one of ours
        raise ValueError(f"{path}: not a face pack ({type(exc).__name__})") from None
    if found != FORMAT:
        raise ValueError(f"{path}: face pack format {found}, this code reads {FORMAT}")
    fer = FaceSet(_decode(blob["fer_data"], blob["fer_ends"], colour=False), blob["fer_targets"],
                  blob["fer_labels"], blob["fer_groups"])
    tfeid = FaceSet(_decode(blob["tfeid_data"], blob["tfeid_ends"], colour=True), blob["tfeid_targets"],
                    blob["tfeid_labels"], blob["tfeid_groups"])
    return fer, tfeid


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--splits", default="train,valid,test", show_default=True, help="FER+ splits to keep, comma-separated.")
@click.option("--tfeid-quality", default=95, show_default=True, help="JPEG quality of the TFEID crops.")
def main(out: Path, splits: str, tfeid_quality: int) -> None:
    """Write a face-training pack (FER+ and runtime-cropped TFEID) to OUT."""
    kept = tuple(s.strip() for s in splits.split(",") if s.strip())
    unknown = set(kept) - {"train", "valid", "test"}
    if unknown:
        raise click.UsageError(f"--splits: no FER+ split {sorted(unknown)[0]!r} (train, valid, test)")
    try:
        sizes = write(out, kept, tfeid_quality)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {sizes['file_bytes'] / 2**20:.1f} MiB; FER+ {sizes['ferplus']} "
               f"({sizes['ferplus_bytes'] / 2**20:.1f} MiB, lossless), TFEID {sizes['tfeid']} crops "
               f"({sizes['tfeid_bytes'] / 2**20:.1f} MiB, JPEG q{tfeid_quality})")


if __name__ == "__main__":
    main()

"""Face photos as the runtime sees them in a video: placed in a frame, moving, H.264-compressed,
decoded, found and cropped by the runtime's own cropper. Used to measure how the face trunk holds
across the frames of one clip (a face that does not change expression should not change label).
"""
from __future__ import annotations

import io

import av
import cv2
import numpy as np
import torch

from mer.runtime.contract import CONDITIONS
from mer.runtime.faces import FaceCropper
from mer.runtime.spec import DEFAULT_SPEC

from .augment import resize, to_float_nchw
from .calibrate import ece, face_scores, softmax
from .metrics import summarise
from .pretrain_faces import face_logits

WIDTH, HEIGHT, FPS, CRF = 640, 360, 15, 30  # a modest webcam stream, compressed as streams are


def moving_frames(face: np.ndarray, rng: np.random.Generator, n: int = DEFAULT_SPEC.frames) -> list[np.ndarray]:
    """n RGB frames: the face ~55 % of the frame height on a grey-noise background, drifting a few
    pixels and scaling a few per cent from frame to frame, as a head does while someone talks."""
    background = (rng.normal(120, 25, (HEIGHT, WIDTH, 3))).clip(0, 255).astype(np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    x0, y0, side0 = WIDTH / 2, HEIGHT / 2, HEIGHT * 0.55
    frames = []
    for k in range(n):
        side = int(side0 * (1 + 0.04 * np.sin(k / 3 + rng.uniform(0, 6))))
        cx = int(x0 + 12 * np.sin(k / 4) + rng.normal(0, 1.5))
        cy = int(y0 + 6 * np.cos(k / 5) + rng.normal(0, 1.5))
        frame = background.copy()
        patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        top, left = cy - side // 2, cx - side // 2
        frame[top:top + side, left:left + side] = patch
        frames.append(frame)
    return frames


def through_h264(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames encoded with libx264 at CRF 30 and decoded back (real compression artefacts)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(CRF)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def runtime_clips(images: np.ndarray, seed: int = 0):
    """Per photo, the runtime's face crops (FaceCrops: uint8 (15, 224, 224, 3), `detected`) of it as a
    moving, H.264-compressed clip."""
    rng = np.random.default_rng(seed)
    cropper = FaceCropper(DEFAULT_SPEC)
    try:
        for image in images:
            yield cropper(through_h264(moving_frames(image, rng)))
    finally:
        cropper.close()


@torch.no_grad()
def clip_agreement(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0,
                   mirror: bool = False) -> dict:
    """Per clip (one photo each): the share of its frames that agree with the clip's majority label,
    the majority's accuracy, per-frame accuracy, and how many frames the cropper found a face in."""
    model.eval()
    agree, clip_right, frame_right, found = [], [], [], 0
    for crops, label in zip(runtime_clips(images, seed), labels):
        found += crops.detected
        pred = face_logits(model, resize(to_float_nchw(torch.from_numpy(crops.faces)), size), mirror).argmax(1).numpy()
        majority = np.bincount(pred, minlength=8).argmax()
        agree.append(float((pred == majority).mean()))
        clip_right.append(majority == label)
        frame_right.append(float((pred == label).mean()))
    return {"clips": int(len(labels)), "frame_agreement": float(np.mean(agree)),
            "clip_accuracy": float(np.mean(clip_right)), "frame_accuracy": float(np.mean(frame_right)),
            "faces_found": f"{found}/{len(labels) * DEFAULT_SPEC.frames}"}


def photo_views(images: np.ndarray, side: int = DEFAULT_SPEC.image_size,
                cropper: FaceCropper | None = None) -> np.ndarray:
    """uint8 (N, frames, side, side, 3): each photo, a face already cropped as the runtime crops
    (FER+, or a TFEID crop), shown for a whole window as the runtime shows a still
    (`FaceCropper.views`: moved, scaled and turned; its exposure normalised). Grey photos become RGB."""
    own = cropper is None
    cropper = cropper or FaceCropper(DEFAULT_SPEC)
    try:
        out = np.empty((len(images), cropper.spec.frames, side, side, 3), np.uint8)
        for i, image in enumerate(images):
            rgb = np.ascontiguousarray(np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image)
            views = cropper.views(rgb, cropper.framing(rgb.shape[1], rgb.shape[0]))
            out[i] = views if views.shape[1] == side else [cv2.resize(v, (side, side), interpolation=cv2.INTER_AREA)
                                                          for v in views]
        return out
    finally:
        if own:
            cropper.close()


STILLS = ("views", "copies")


def view_stacks(images: np.ndarray, side: int, step: int):
    """`images` a chunk of `step` at a time as (n, frames, side, side, 3) view stacks (photo_views,
    one cropper for all); stacks given ((N, frames, S, S, 3), e.g. `load_tfeid(views=True)`) pass as they are."""
    cropper = None if images.ndim == 5 else FaceCropper(DEFAULT_SPEC)
    try:
        for s in range(0, len(images), step):
            part = images[s:s + step]
            yield np.ascontiguousarray(part) if cropper is None else photo_views(part, side, cropper)
    finally:
        if cropper is not None:
            cropper.close()


@torch.no_grad()
def views_evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, size: int, mirror: bool = False,
                   chunk: int = 64) -> dict:
    """A face trunk with its classifier (`mer-train eval-faces --trunk`) reading each photo as the
    runtime shows a still: its logits averaged over the 15 views (the face-alone classifier reads
    a clip's mean feature, so its logits are the mean of the frames'); summarise's figures.
    `images`: face photos, or view stacks (view_stacks)."""
    model.eval()
    preds = []
    for stacks in view_stacks(images, size, chunk):
        n, t = stacks.shape[:2]
        x = resize(to_float_nchw(torch.from_numpy(stacks.reshape(n * t, *stacks.shape[2:]))), size)
        preds.append(face_logits(model, x, mirror).reshape(n, t, -1).mean(1).argmax(1).numpy())
    return summarise(labels, np.concatenate(preds))


@torch.no_grad()
def face_alone_logits(model: torch.nn.Module, images: np.ndarray, as_clips: bool, calibrated: bool = True,
                      seed: int = 0, batch: int = 64, still: str = "views") -> tuple[np.ndarray, int]:
    """(N, 8) logits of a fusion model given a face and no speech (what the runtime feeds when a
    clip is silent), calibrated as shipped or raw, and the frames the cropper found a face in.
    `as_clips`: each photo as a moving H.264 clip through the runtime's cropper and the model's
    whole graph. Else the photo still: `still="views"` shows it as the runtime shows a photo, 15
    views of the face through the whole graph (`images` may already be such (N, 15, S, S, 3) stacks,
    e.g. `load_tfeid(views=True)`); `"copies"`, the photo resized to the runtime's crop, its trunk
    features computed once (twice for a mirrored model) and shown for all 15 frames (15 copies of
    one crop, what the runtime fed before round 18; 7-15x cheaper)."""
    if still not in STILLS:
        raise ValueError(f"still must be one of {STILLS}, got {still!r}")
    model.eval()
    side = model.image_size
    silence = torch.zeros(1, model.config()["n_mfcc"], DEFAULT_SPEC.n_frames_audio)
    face_only = torch.tensor([CONDITIONS.index("video_only")])
    logits, found = [], 0
    if as_clips:
        for crops in runtime_clips(images, seed):
            found += crops.detected
            logits.append(model.raw_logits(torch.from_numpy(crops.faces)[None], silence))
    elif still == "views" or images.ndim == 5:
        for stacks in view_stacks(images, side, max(1, batch // 4)):  # 15 frames a photo: a quarter as many
            logits.append(model.raw_logits(torch.from_numpy(stacks), silence.expand(len(stacks), -1, -1)))
    else:
        for s in range(0, len(images), batch):
            still_crops = np.stack([cv2.resize(np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else im, (side, side),
                                               interpolation=cv2.INTER_LINEAR) for im in images[s:s + batch]])
            feats = model.still_frame_features(model.prepare_faces(torch.from_numpy(still_crops)[:, None]))
            logits.append(model.forward_features(feats, silence.expand(len(still_crops), -1, -1),
                                                 torch.ones(len(still_crops), dtype=torch.bool)))
    z = torch.cat(logits)
    if calibrated:
        z = model.calibrated(z, face_only.expand(len(z)))
    return z.numpy(), found


@torch.no_grad()
def face_alone_ends(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8) face-alone log-probabilities of photos read as views (uncalibrated) by a model with a face
    classifier: by its fusion head alone and by the classifier alone, the two ends its share mixes.
    One trunk pass a photo serves both (the trunk is nearly all the cost; the heads are small)."""
    model.eval()
    silence = torch.zeros(1, model.config()["n_mfcc"], DEFAULT_SPEC.n_frames_audio)
    head, classifier = [], []
    for stacks in view_stacks(images, model.image_size, max(1, batch // 4)):
        feats = model.frame_features(model.prepare_faces(torch.from_numpy(stacks)))
        head.append(model.forward_features(feats, silence.expand(len(stacks), -1, -1)).log_softmax(-1))
        classifier.append(model.face_alone_logits(feats).log_softmax(-1))
    return torch.cat(head).numpy(), torch.cat(classifier).numpy()


def face_alone_scores(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, as_clips: bool,
                      still: str = "views") -> dict:
    """`mer-train eval-faces --model`: accuracy, UAR and ECE of the face-alone answer as shipped,
    calm counted as neutral (calibrate.face_scores)."""
    z, found = face_alone_logits(model, images, as_clips, still=still)
    probs = face_scores(softmax(z))
    scores = summarise(labels, probs.argmax(1))
    row = {"accuracy": scores["accuracy"], "uar": scores["uar"], "ece": ece(probs, labels), "n": scores["n"]}
    return row | ({"faces_found": f"{found}/{len(labels) * DEFAULT_SPEC.frames}"} if as_clips else {})

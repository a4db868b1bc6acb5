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


@torch.no_grad()
def face_alone_logits(model: torch.nn.Module, images: np.ndarray, as_clips: bool, calibrated: bool = True,
                      seed: int = 0, batch: int = 64) -> tuple[np.ndarray, int]:
    """(N, 8) logits of a fusion model given a face and no speech (what the runtime feeds when a
    clip is silent), calibrated as shipped or raw, and the frames the cropper found a face in.
    `as_clips`: each photo as a moving H.264 clip through the runtime's cropper and the model's
    whole graph; else the photo still, resized to the runtime's crop, its trunk features computed
    once (twice for a mirrored model) and shown for all 15 frames (the same answer as 15 copies
    through the graph, 7-15x cheaper)."""
    model.eval()
    side = model.image_size
    silence = torch.zeros(1, model.config()["n_mfcc"], DEFAULT_SPEC.n_frames_audio)
    face_only = torch.tensor([CONDITIONS.index("video_only")])
    logits, found = [], 0
    if as_clips:
        for crops in runtime_clips(images, seed):
            found += crops.detected
            logits.append(model.raw_logits(torch.from_numpy(crops.faces)[None], silence))
    else:
        for s in range(0, len(images), batch):
            still = np.stack([cv2.resize(np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else im, (side, side),
                                         interpolation=cv2.INTER_LINEAR) for im in images[s:s + batch]])
            feats = model.still_frame_features(model.prepare_faces(torch.from_numpy(still)[:, None]))
            logits.append(model.forward_features(feats, silence.expand(len(still), -1, -1),
                                                 torch.ones(len(still), dtype=torch.bool)))
    z = torch.cat(logits)
    if calibrated:
        z = model.calibrated(z, face_only.expand(len(z)))
    return z.numpy(), found


def face_alone_scores(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, as_clips: bool) -> dict:
    """`mer-train eval-faces --model`: accuracy, UAR and ECE of the face-alone answer as shipped,
    calm counted as neutral (calibrate.face_scores)."""
    z, found = face_alone_logits(model, images, as_clips)
    probs = face_scores(softmax(z))
    scores = summarise(labels, probs.argmax(1))
    row = {"accuracy": scores["accuracy"], "uar": scores["uar"], "ece": ece(probs, labels), "n": scores["n"]}
    return row | ({"faces_found": f"{found}/{len(labels) * DEFAULT_SPEC.frames}"} if as_clips else {})

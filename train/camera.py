"""Camera conditions for measuring how the face alone holds up: what a user's camera does to a face.

Each condition turns a face photo into a frame as a camera might give it: the photo set in a frame
half its size again on every side (its edges repeated, not black, which would frame the face),
then tilted, darkened, tinted, shrunk, blurred, noised or compressed. The whole frame is changed,
so the face detector meets the condition too. The faces are then found and cropped by the
runtime's own cropper (`face_data.load_tfeid(condition=...)`). `mer-train eval-camera` reports
the face alone under each.

Photometric conditions work on linear light: a camera's exposure and white balance scale light,
not the gamma-encoded pixel values.
"""
from __future__ import annotations

import zlib

import numpy as np

# name -> what it stands for (printed beside the figures)
CONDITIONS: dict[str, str] = {
    "clean": "the photo in a larger frame, nothing else",
    "tilt-30": "the head tilted 30 degrees clockwise on screen",
    "tilt-15": "15 degrees clockwise",
    "tilt+15": "15 degrees counter-clockwise",
    "tilt+30": "30 degrees counter-clockwise",
    "dim": "1.5 stops under-exposed (a dim room), sensor noise sigma 3",
    "dark": "3 stops under-exposed, sensor noise sigma 6 (an evening webcam)",
    "bright": "1.5 stops over-exposed (a face in sunlight, the highlights clipped)",
    "side": "lit from one side: 3 stops darker from the face's left edge to its right, noise sigma 3",
    "backlit": "a bright window behind: the scene 2 stops over (clipped), the face 1.5 under, noise sigma 4",
    "warm": "white balance off towards tungsten (red x1.25, blue x0.6)",
    "cool": "white balance off towards shade (red x0.75, blue x1.3)",
    "far": "the face about 40 px tall (a person across a room), upscaled by the cropper",
    "defocus": "Gaussian blur, sigma 3 px on a ~200 px face",
    "motion": "horizontal motion blur over 15 px",
    "noise": "sensor noise, sigma 15",
    "jpeg": "JPEG quality 12 (a starved video call)",
}
TILTS = {"tilt-30": -30.0, "tilt-15": -15.0, "tilt+15": 15.0, "tilt+30": 30.0}


def in_frame(rgb: np.ndarray) -> np.ndarray:
    """`rgb` set in a frame half its size again on every side, the edges repeated."""
    import cv2

    h, w = rgb.shape[:2]
    return cv2.copyMakeBorder(rgb, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REPLICATE)


def tilted(frame: np.ndarray, degrees: float) -> np.ndarray:
    """`frame` turned `degrees` counter-clockwise on screen about its centre, the edges repeated."""
    import cv2

    turn = cv2.getRotationMatrix2D(((frame.shape[1] - 1) / 2, (frame.shape[0] - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(frame, turn, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _linear(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 255.0) ** 2.2


def _encoded(lin: np.ndarray) -> np.ndarray:
    return (np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def _rng(seed: int, condition: str) -> np.random.Generator:
    """Noise drawn from the photo's seed and the condition's name: the same frames on every run."""
    return np.random.default_rng([seed, zlib.crc32(condition.encode())])


def _noisy(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


# Conditions that need the frame around a face (not for a face crop alone): where the face is in
# it decides what they do.
FRAMING = ("far", "side", "backlit", *TILTS)


def apply(photo: np.ndarray, condition: str, seed: int = 0) -> np.ndarray:
    """The frame a camera under `condition` gives of `photo` (uint8 RGB)."""
    import cv2

    if condition not in CONDITIONS:
        raise ValueError(f"{condition!r}: not a camera condition ({', '.join(CONDITIONS)})")
    frame = in_frame(photo)
    if condition in TILTS:
        return tilted(frame, TILTS[condition])
    if condition == "far":
        # The photo's face is ~200 px of a 256 px photo: a fifth of that is a face ~40 px tall.
        h, w = frame.shape[:2]
        return cv2.resize(frame, (w // 5, h // 5), interpolation=cv2.INTER_AREA)
    if condition in ("side", "backlit"):
        return _lit(frame, photo.shape[:2], condition, seed)
    return photometric(frame, condition, seed)


def _lit(frame: np.ndarray, photo_hw: tuple[int, int], condition: str, seed: int) -> np.ndarray:
    """Light that differs across the frame (in_frame's: the photo in its middle half). Side: the
    gain falls 3 stops over the face's width, a smooth stand-in for a lamp or window to one side
    (real side light also casts the nose's and brows' shadows, which this does not). Backlit: the
    camera exposes for a bright background, so the scene clips and the face is left under."""
    h, w = photo_hw
    lin = _linear(frame)
    if condition == "side":
        x = np.arange(frame.shape[1], dtype=np.float32)
        lin *= (2.0 ** (-3.0 * np.clip((x - w // 2) / w, 0, 1)))[None, :, None]
        sigma = 3.0
    else:
        gain = np.full(frame.shape[:2], 2.0 ** 2, np.float32)
        gain[h // 2:h // 2 + h, w // 2:w // 2 + w] = 2.0 ** -1.5
        lin *= gain[..., None]
        sigma = 4.0
    rng = _rng(seed, condition)
    return _noisy(_encoded(lin), sigma, rng)


def photometric(rgb: np.ndarray, condition: str, seed: int = 0) -> np.ndarray:
    """`rgb` (a frame, or a face crop) under a condition that changes its pixels, not its framing.
    Noise is drawn from `seed` and the condition's name: the same frames on every run."""
    import cv2

    if condition in FRAMING or condition not in CONDITIONS:
        raise ValueError(f"{condition!r}: not a condition of the pixels alone")
    rng = _rng(seed, condition)
    if condition in ("dim", "dark"):
        stops, sigma = (1.5, 3.0) if condition == "dim" else (3.0, 6.0)
        return _noisy(_encoded(_linear(rgb) * 2.0 ** -stops), sigma, rng)
    if condition == "bright":
        return _encoded(_linear(rgb) * 2.0 ** 1.5)
    if condition in ("warm", "cool"):
        gains = np.array([1.25, 1.0, 0.6] if condition == "warm" else [0.75, 1.0, 1.3], np.float32)
        return _encoded(_linear(rgb) * gains)
    if condition == "defocus":
        return cv2.GaussianBlur(rgb, (0, 0), 3.0)
    if condition == "motion":
        kernel = np.full((1, 15), 1 / 15, np.float32)
        return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    if condition == "noise":
        return _noisy(rgb, 15.0, rng)
    if condition == "jpeg":
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 12])
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])
    return rgb.copy()  # clean

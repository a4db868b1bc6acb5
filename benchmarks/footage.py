"""Benchmark footage that costs what a camera's footage costs to decode.

    python benchmarks/footage.py OUT.mp4 --seconds 40          # ~30-50 s to write on 2 cores
    python benchmarks/footage.py OUT.mp4 --seconds 3.3 --probe # and print profile, B-frames, bitrate, decode ms/frame

A still face pasted on a flat grey frame (tests/media.py's place_face + write_clip) encodes to
almost nothing (0.2-0.3 Mb/s: skipped macroblocks, zero residuals) and decodes in ~0.3 ms per
720p frame on the project's 2-core machine, against ~2.6-3.2 ms for real 720p RAVDESS footage:
a latency benchmark on it flatters the decode stage several times over. This module writes
1280x720 at 29.97 fps (30000/1001), H.264 High profile with B-frames (3, pyramid), a keyframe
every second, plus AAC speech, where every frame moves and carries texture: a real face that
sways, tilts, zooms, opens its jaw with the speech's loudness and changes brightness, composited
over a structured texture that pans, zooms and shakes like a handheld camera, plus fresh film
grain in each frame so that, as with a real sensor, the encoder spends its bits on residuals.

Decode cost grows with the bitrate (measured on that machine, PyAV, thread_type AUTO, 99
frames): ~2.4 ms/frame at 5 Mb/s, ~2.7 at 6, ~3.1 at 8, ~3.4 at 10. The default, 8 Mb/s, lands
on the 3.2 ms/frame that ../shared/DESIGN.md records for a real 720p RAVDESS clip (all 99 frames
in ~314 ms), the dearer of the two real figures we have (the other is ~2.6 ms/frame); the issue's
"~10 Mb/s" costs a little more than either.

Face and speech default to ../shared (a TFEID crop, a RAVDESS utterance; MER_SHARED overrides
the folder) and otherwise to tests/fixtures (a public-domain NASA portrait, eSpeak NG speech).
Needs numpy, av (PyAV with libx264) and OpenCV (which mediapipe brings); no torch.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FPS = Fraction(30000, 1001)
WIDTH, HEIGHT = 1280, 720
SAMPLE_RATE = 16000
SHARED_FACE = "data/faces/tfeid/images/0111b01.jpg"
SHARED_SPEECH = "data/ravdess_speech_16k/Actor_03/03-01-03-02-01-01-03.flac"
FIXTURE_FACE = REPO / "tests" / "fixtures" / "face_astronaut.jpg"
FIXTURE_SPEECH = REPO / "tests" / "fixtures" / "speech_en.flac"


# ---------------------------------------------------------------------------------------- sources

def shared_dir() -> Path:
    return Path(os.environ.get("MER_SHARED", REPO.parent / "shared"))


def face_source() -> Path:
    """The TFEID crop in ../shared when present, else the committed fixture."""
    path = shared_dir() / SHARED_FACE
    return path if path.is_file() else FIXTURE_FACE


def speech_source() -> Path:
    """The RAVDESS utterance in ../shared when present, else the committed fixture."""
    path = shared_dir() / SHARED_SPEECH
    return path if path.is_file() else FIXTURE_SPEECH


def load_face(path: Path | None = None) -> np.ndarray:
    """A face image as RGB uint8."""
    import cv2

    path = Path(path) if path is not None else face_source()
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"cannot read a face image from {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load_speech(path: Path | None = None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio file's first audio stream as mono float32 at `rate` Hz (PyAV's resampler)."""
    path = Path(path) if path is not None else speech_source()
    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    if not chunks:
        raise ValueError(f"{path}: no audio")
    return np.concatenate(chunks).astype(np.float32)


def loop_to(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` repeated (or cut) to exactly n samples."""
    wave = np.asarray(wave, np.float32).reshape(-1)
    return np.tile(wave, int(np.ceil(n / len(wave))))[:n]


# ------------------------------------------------------------------------------------------ frames

def texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A structured RGB texture, like a cluttered room out of focus: multi-octave noise (coarse
    blotches down to pixel detail, mostly in brightness, a little in colour) under soft-edged
    panels of muted colours and a few straight edges. uint8 (height, width, 3)."""
    import cv2

    acc = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((160, 34.0), (64, 24.0), (24, 16.0), (8, 11.0), (3, 8.0), (1, 5.0)):
        h, w = height // cell + 3, width // cell + 3
        small = rng.standard_normal((h, w, 1)) + 0.35 * rng.standard_normal((h, w, 3))
        up = cv2.resize(small.astype(np.float32), (w * cell, h * cell),
                        interpolation=cv2.INTER_CUBIC if cell > 1 else cv2.INTER_NEAREST)
        acc += weight * up[:height, :width]
    img = np.array([124, 114, 102], np.float32) + acc  # a warm grey room
    for _ in range(36):  # panels: furniture, shelves, posters
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(40, width // 3)), y0 + int(rng.integers(30, height // 3))
        tone = rng.uniform(40, 210) + rng.uniform(-25, 25, 3)
        img[y0:y1, x0:x1] = 0.5 * img[y0:y1, x0:x1] + 0.5 * tone
    for _ in range(24):  # edges
        p = rng.integers(0, [width, height], size=(2, 2))
        tone = rng.uniform(30, 225) + rng.uniform(-20, 20, 3)
        cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), tone.tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    return np.clip(img, 0, 255).astype(np.uint8)


def _face_mask(side: int) -> np.ndarray:
    """A feathered ellipse (float32 0..1, side x side x 1): the head and hair of a face crop."""
    import cv2

    mask = np.zeros((side, side), np.float32)
    cv2.ellipse(mask, (side // 2, int(side * 0.5)), (int(side * 0.46), int(side * 0.5)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), side * 0.03)
    return mask[:, :, None]


def _envelope(wave: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Loudness per video frame, 0..1 (RMS over each frame's audio, normalised to its 95th percentile)."""
    hop = rate / fps
    rms = np.array([np.sqrt(np.mean(np.square(wave[int(i * hop): int((i + 1) * hop)] + 1e-9)))
                    for i in range(n_frames)], np.float32)
    return np.clip(rms / (np.percentile(rms, 95) + 1e-6), 0.0, 1.0)


def talking_face_frames(face: np.ndarray, seconds: float, speech: np.ndarray | None = None, *,
                        width: int = WIDTH, height: int = HEIGHT, fps: float = float(FPS),
                        grain: float = 5.0, seed: int = 0) -> Iterator[np.ndarray]:
    """RGB uint8 (height, width, 3) frames, round(seconds * fps) of them, all different.

    The background is a texture 1.35x the frame, panned, zoomed (+-6 %) and shaken (a few px at
    1-3 Hz) like a handheld camera, with slow auto-exposure drift. The face (about 48 % of the
    frame height) sways, drifts, tilts (+-4 deg), scales (+-10 %), changes brightness (+-15 %) and
    opens its jaw with the loudness of `speech` (16 kHz mono, looped). `grain` is the standard
    deviation, in 8-bit levels, of the fresh luma noise (with a third as much chroma noise) added
    to every frame.
    """
    import cv2

    rng = np.random.default_rng(seed)
    n_frames = int(round(seconds * fps))
    bg_w, bg_h = int(width * 1.35), int(height * 1.35)
    bg = texture(rng, bg_w, bg_h)
    env = (_envelope(loop_to(speech, int(np.ceil(seconds * SAMPLE_RATE)) + SAMPLE_RATE), SAMPLE_RATE, fps, n_frames)
           if speech is not None else np.zeros(n_frames, np.float32))
    # Grain: a bank of noise fields a little larger than the frame; each frame takes one at a
    # random offset, so no two frames share grain (and motion search cannot find it).
    pad = 48
    bank = []
    for _ in range(6):
        luma = rng.normal(0.0, grain, (height + pad, width + pad, 1))
        chroma = rng.normal(0.0, grain / 3, (height + pad, width + pad, 3))
        bank.append(np.clip(luma + chroma, -127, 127).astype(np.int16))
    base_side = int(height * 0.48)
    phases = rng.uniform(0, 2 * np.pi, 16)

    def wave_(t: float, freq: float, k: int) -> float:
        return float(np.sin(2 * np.pi * freq * t + phases[k]))

    for i in range(n_frames):
        t = i / fps
        # Camera: zoom about the centre, slow pan, handheld shake.
        zoom = 1.0 + 0.06 * wave_(t, 0.045, 0)
        cx = bg_w / 2 + 0.11 * width * wave_(t, 0.021, 1) + 2.5 * wave_(t, 1.3, 2) + 1.5 * wave_(t, 2.9, 3)
        cy = bg_h / 2 + 0.09 * height * wave_(t, 0.017, 4) + 2.0 * wave_(t, 1.7, 5) + 1.2 * wave_(t, 3.1, 6)
        # dst = zoom * (src - (cx, cy)) + (width/2, height/2)
        m = np.array([[zoom, 0.0, width / 2 - zoom * cx], [0.0, zoom, height / 2 - zoom * cy]], np.float32)
        frame = cv2.warpAffine(bg, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        # Face: scale, tilt, jaw, brightness, position.
        side = int(base_side * (1.0 + 0.10 * wave_(t, 0.13, 7)))
        f = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_LINEAR)
        jaw = int(side * 0.07 * env[i])  # the part below the mouth line stretches as the voice gets loud
        if jaw:
            cut = int(side * 0.70)
            lower = cv2.resize(f[cut:], (side, side - cut + jaw), interpolation=cv2.INTER_LINEAR)
            f = np.concatenate([f[:cut], lower[: side - cut]], axis=0)
        angle = 4.0 * wave_(t, 0.23, 8)
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        f = cv2.warpAffine(f, rot, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        gain = 1.0 + 0.15 * wave_(t, 0.07, 9)
        x = int(width / 2 - side / 2 + 0.12 * width * wave_(t, 0.09, 10) + 14 * wave_(t, 0.7, 11))
        y = int(height / 2 - side / 2 + 0.05 * height * wave_(t, 0.11, 12) + 7 * wave_(t, 0.5, 13))
        x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
        alpha = _face_mask(side)
        roi = frame[y:y + side, x:x + side].astype(np.float32)
        frame[y:y + side, x:x + side] = np.clip(alpha * (f.astype(np.float32) * gain) + (1 - alpha) * roi,
                                                0, 255).astype(np.uint8)

        # Exposure drift and grain over the whole picture.
        noise = bank[int(rng.integers(len(bank)))]
        ox, oy = int(rng.integers(pad)), int(rng.integers(pad))
        out = frame.astype(np.int16)
        exposure = wave_(t, 0.031, 14)
        if abs(exposure) > 0.3:
            out += int(round(6 * exposure))
        out += noise[oy:oy + height, ox:ox + width]
        yield np.clip(out, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- writing

def make_footage(path: Path | str, seconds: float = 40.0, face: np.ndarray | None = None,
                 speech: np.ndarray | None = None, *, seed: int = 0, preset: str = "veryfast",
                 bitrate: int = 8_000_000, keyint: int = 30, grain: float = 5.0,
                 width: int = WIDTH, height: int = HEIGHT) -> Path:
    """Write an mp4: H.264 High 1280x720 at 30000/1001 fps, 3 B-frames (pyramid), ~`bitrate` b/s
    (ABR with a VBV ceiling, a keyframe every `keyint` frames, as phones record), AAC stereo
    48 kHz speech. `face` is RGB uint8 (default: face_source()), `speech` mono float32 at 16 kHz
    (default: speech_source()), looped to `seconds`."""
    path = Path(path)
    face = load_face() if face is None else np.ascontiguousarray(face[:, :, :3]).astype(np.uint8)
    speech = load_speech() if speech is None else np.asarray(speech, np.float32).reshape(-1)
    n_audio = int(round(seconds * SAMPLE_RATE))
    wave = loop_to(speech, n_audio)
    kbps = bitrate // 1000
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.bit_rate = bitrate
        v.options = {
            "preset": preset,
            "profile": "high",
            "x264-params": (f"bframes=3:b-pyramid=normal:b-adapt=1:keyint={keyint}:min-keyint={keyint}:"
                            f"scenecut=0:vbv-maxrate={int(kbps * 1.5)}:vbv-bufsize={kbps * 2}"),
        }
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        a.bit_rate = 128_000
        for rgb in talking_face_frames(face, seconds, wave, width=width, height=height, grain=grain, seed=seed):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        _encode_audio(out, a, wave, SAMPLE_RATE)
    return path


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=stream.rate,
                                  frame_size=stream.frame_size or None)
    src = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None, :], format="flt", layout="mono")
    src.sample_rate, src.pts, src.time_base = sample_rate, 0, Fraction(1, sample_rate)
    for frame in resampler.resample(src) + resampler.resample(None):
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


# ------------------------------------------------------------------------------------------ checks

def probe(path: Path | str, repeats: int = 5, max_frames: int | None = None) -> dict:
    """What the footage is and what it costs: profile, size, rate, frame types, bitrate, and the
    median (and the minimum) over `repeats` runs of the time to decode its video frames (PyAV, thread_type AUTO, no
    conversion to RGB) per frame, over all frames or the first `max_frames`."""
    from av.video.frame import PictureType

    path = Path(path)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = float(c.duration / av.time_base) if c.duration else float(s.duration * s.time_base)
        info = {"profile": s.codec_context.profile, "codec": s.codec_context.name,
                "width": s.codec_context.width, "height": s.codec_context.height,
                "fps": str(s.average_rate), "duration_s": round(duration, 3),
                "bitrate_mbps": round(path.stat().st_size * 8 / duration / 1e6, 2),
                "video_bitrate_mbps": None, "audio": None}
        if c.streams.audio:
            sa = c.streams.audio[0]
            info["audio"] = f"{sa.codec_context.name} {sa.rate} Hz {sa.layout.name}"
        types: dict[str, int] = {}
        vbytes = 0
        for packet in c.demux(s):
            vbytes += packet.size
        c.seek(0)
        for frame in c.decode(s):
            kind = PictureType(frame.pict_type).name
            types[kind] = types.get(kind, 0) + 1
        info["frame_types"] = types
        info["video_bitrate_mbps"] = round(vbytes * 8 / duration / 1e6, 2)
    times, cpu = [], []
    for _ in range(repeats):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for _frame in c.decode(s):
                n += 1
                if max_frames and n >= max_frames:
                    break
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    info["decoded_frames"] = n
    info["decode_ms"] = round(float(np.median(times)), 1)
    info["decode_ms_per_frame"] = round(float(np.median(times)) / n, 3)
    info["decode_ms_per_frame_min"] = round(float(np.min(times)) / n, 3)  # least disturbed by other load
    info["decode_cpu_ms_per_frame"] = round(float(np.median(cpu)) / n, 3)  # all decoder threads together
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output .mp4")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--face", type=Path, help=f"face image (default: {SHARED_FACE} in ../shared, else {FIXTURE_FACE.name})")
    ap.add_argument("--speech", type=Path, help="speech audio, any format (default: RAVDESS in ../shared, else the fixture)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="veryfast", help="x264 preset (the decode cost barely depends on it)")
    ap.add_argument("--bitrate", type=float, default=8.0, help="Mb/s")
    ap.add_argument("--grain", type=float, default=5.0, help="film grain, standard deviation in 8-bit levels")
    ap.add_argument("--probe", action="store_true", help="print profile, frame types, bitrate and decode cost")
    args = ap.parse_args(argv)
    face = load_face(args.face) if args.face else None
    speech = load_speech(args.speech) if args.speech else None
    t0 = time.perf_counter()
    make_footage(args.out, args.seconds, face, speech, seed=args.seed, preset=args.preset,
                 bitrate=int(args.bitrate * 1e6), grain=args.grain)
    print(f"{args.out}: {args.seconds:g} s written in {time.perf_counter() - t0:.1f} s "
          f"({args.out.stat().st_size / 1e6:.1f} MB)")
    if args.probe:
        for key, value in probe(args.out).items():
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

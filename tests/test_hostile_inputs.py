"""Inputs that lie: unreadable files among good ones, audio that does not cover the window, odd
frame shapes, odd names, outputs that cannot be written, pipes. Each case failed before the
streaming engine (see the issue "Emotion over time", item 6)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from mer.runtime.spec import DEFAULT_SPEC as SPEC

from media import place_face, write_audio, write_clip
from test_cli import assert_clean_stderr, error_lines, run_cli


def _without_root_read_powers() -> list[str]:
    """A command prefix under which a 000 file is really unreadable: root reads anything, unless
    it runs without the capabilities that override file permissions (util-linux setpriv)."""
    if os.geteuid() != 0:
        return []
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a 000 file stays readable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_one_unreadable_file_among_several_is_one_error_line(exported, speech, tmp_path):
    folder = tmp_path / "perm"
    folder.mkdir()
    a, b = (write_audio(folder / n, speech) for n in ("a.m4a", "b.mp3"))
    x = folder / "x.mp4"
    x.write_bytes(a.read_bytes())
    x.chmod(0)
    model = folder / "ia.onnx"
    model.write_bytes(exported("ia").read_bytes())
    proc = subprocess.run([*_without_root_read_powers(), sys.executable, "-m", "mer.runtime.cli", a, x, b,
                           "--model", model, "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "MER_DEBUG": ""})
    assert proc.returncode == 1, proc.stderr
    assert_clean_stderr(proc)
    (line,) = error_lines(proc)
    assert "x.mp4" in line and "permission denied" in line
    assert sorted(json.loads(r)["file"].rsplit("/", 1)[-1] for r in proc.stdout.splitlines()) == ["a.m4a", "b.mp3"]


def _clip(tmp_path, name, seconds, audio, audio_offset=0.0, size=(160, 120), fps=10.0, face=None):
    frames = [place_face(face, *size, i / fps) if face is not None else np.full((size[1], size[0], 3), 90, np.uint8)
              for i in range(int(seconds * fps))]
    return write_clip(tmp_path / name, frames, fps, audio, 16000, audio_offset=audio_offset)


def test_audio_that_ends_before_the_window_is_absent_not_zero_filled(recognizer, speech, face, tmp_path):
    clip = _clip(tmp_path, "short_audio.mp4", 60.0, speech[:2 * 16000], face=face, size=(320, 240))
    result = recognizer.predict(clip)
    assert result.window == pytest.approx((28.2, 31.8), abs=0.05)
    assert result.audio is False and any("audio covers 0%" in w for w in result.warnings), result.warnings


def test_audio_that_starts_after_the_window_is_absent_and_found_without_decoding_everything(recognizer, speech, face,
                                                                                          tmp_path):
    from mer.runtime.source import End, MediaSource
    from mer.runtime.window import centred

    clip = _clip(tmp_path, "late_audio.mp4", 60.0, np.tile(speech, 6), audio_offset=40.0, face=face, size=(320, 240))
    result = recognizer.predict(clip)
    assert result.audio is False and any("audio covers 0%" in w for w in result.warnings), result.warnings
    assert result.faces_detected == 15
    # The seek is not retried from the start because the audio begins late: few frames decoded.
    with MediaSource(clip, SPEC) as src:
        end = [e for e in src.events([centred(60.0, SPEC)], seek=True, stop_when_covered=True) if isinstance(e, End)][0]
    assert end.frames_seen < 100  # of 600


def test_a_file_truncated_at_half_warns_or_drops_the_missing_audio(recognizer, speech, face, tmp_path):
    whole = _clip(tmp_path, "whole.mkv", 60.0, np.tile(speech, 20)[:60 * 16000], face=face, size=(320, 240))
    data = whole.read_bytes()
    half = tmp_path / "half.mkv"
    half.write_bytes(data[: int(len(data) * 0.49)])
    result = recognizer.predict(half)  # the header still says 60 s; the data stops near 29 s
    assert result.window == pytest.approx((28.2, 31.8), abs=0.05)
    assert any("audio covers" in w for w in result.warnings) or result.audio is False, result.warnings


@pytest.mark.parametrize("size", [(2, 1280), (1280, 2), (4000, 4)])
def test_frames_of_odd_shapes_give_a_result_not_an_opencv_error(exported, speech, tmp_path, size):
    w, h = size
    clip = write_clip(tmp_path / f"odd_{w}x{h}.mkv", [np.full((h, w, 3), 120, np.uint8)] * 30, 10.0,
                      speech[: 3 * 16000], 16000)
    proc = run_cli(clip, "--json", "--model", exported("ia"))
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc)
    record = json.loads(proc.stdout)
    assert record["faces_detected"] == 0 and record["audio"] is True


def test_a_file_name_with_a_newline_stays_on_one_line(exported, tmp_path):
    weird = tmp_path / "two\nlines.mp4"
    weird.write_bytes(b"not media at all" * 100)
    proc = run_cli(weird, "--model", exported("ia"))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "two\\nlines.mp4" in line


def test_model_paths_that_are_not_models(tmp_path, speech):
    audio = write_audio(tmp_path / "a.wav", speech)
    empty = run_cli(audio, "--model", "")
    assert empty.returncode == 2 and "empty model path" in empty.stderr
    folder = run_cli(audio, "--model", tmp_path)
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    for proc in (empty, folder):
        assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_output_that_cannot_be_written_is_one_line(exported, speech, tmp_path):
    audio = write_audio(tmp_path / "a.mp3", speech)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "mer.runtime.cli", audio, "--model", exported("ia")],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mer-infer: error: cannot write output")


def test_a_fifo_is_read_as_a_stream_not_called_empty(exported, clip_factory, tmp_path):
    clip = clip_factory("for_fifo.mkv", seconds=4.0, size=(320, 240))
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(clip.read_bytes())

    threading.Thread(target=feed, daemon=True).start()
    proc = run_cli(fifo, "--json", "--model", exported("ia"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["faces_detected"] > 0 and record["audio"] is True


@pytest.mark.parametrize("case", ["too_long", "loop", "denied_dir"])
def test_os_errors_are_input_errors_with_their_reason(recognizer, tmp_path, case):
    from mer.runtime.errors import InputError

    if case == "too_long":
        path, reason = tmp_path / ("x" * 300 + ".mp4"), "file name too long"
    elif case == "loop":
        path, reason = tmp_path / "loop.mp4", "symbolic links"
        os.symlink(path, path)
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads any folder: permission cannot be denied to it")
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "x.mp4").write_bytes(b"x")
        locked.chmod(0)
        path, reason = locked / "x.mp4", "permission denied"
    with pytest.raises(InputError, match=reason):
        recognizer.predict(path)


def test_non_finite_audio_is_repaired_and_said_and_int16_is_scaled(recognizer, speech):
    broken = speech.copy()
    broken[1000:1100] = np.nan
    result = recognizer.predict_arrays(audio=broken)
    assert any("100 non-finite" in w for w in result.warnings)
    as_float = recognizer.predict_arrays(audio=speech)
    as_int16 = recognizer.predict_arrays(audio=np.round(speech * 32767).astype(np.int16))
    assert as_int16.label == as_float.label
    assert max(abs(as_int16.probabilities[k] - as_float.probabilities[k]) for k in as_float.probabilities) < 0.02
    loud = recognizer.predict_arrays(audio=speech * 4)
    assert any("clipped" in w for w in loud.warnings)


def test_non_finite_samples_in_a_file_are_said(recognizer, tmp_path):
    import av
    from fractions import Fraction

    wave = (0.3 * np.sin(np.arange(3 * 16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    wave[5000:5010] = np.inf
    path = tmp_path / "float.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_f32le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    result = recognizer.predict(path)
    assert any("non-finite" in w for w in result.warnings), result.warnings

"""The live page in a real headless Chromium: a fake camera and microphone fed from a real clip
(Chromium's fake-media-device flags), driven through the DevTools protocol; the label shows and a
screenshot is saved."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from test_serve import server  # noqa: F401  (the running mer-serve)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian package `chromium`; .ci/run installs it)")
SCREENSHOT = Path(tempfile.gettempdir()) / "mer-live-page.png"


def _fake_media(folder: Path, face: np.ndarray, speech: np.ndarray) -> tuple[Path, Path]:
    """A Y4M video (Chromium's fake camera reads Y4M) and a WAV of the same real face and speech."""
    import av

    from media import place_face, write_audio

    video = folder / "camera.y4m"
    with av.open(str(video), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=Fraction(15))
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i in range(15 * 6):
            frame = av.VideoFrame.from_ndarray(place_face(face, 640, 480, i / 15), format="rgb24")
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = write_audio(folder / "microphone.wav", np.tile(speech, 3), 16000)
    return video, audio


async def _drive(port: int, url: str) -> tuple[str, str, float]:
    import httpx
    import websockets

    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params):
            i = next(ids)
            await ws.send(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == i:
                    return message.get("result", {})

        await call("Page.enable")
        await call("Page.navigate", url=url)
        label, t0 = "—", time.time()  # from opening the page
        while time.time() - t0 < 60:
            result = await call("Runtime.evaluate", expression="document.getElementById('label').textContent",
                                returnByValue=True)
            label = result.get("result", {}).get("value", "—")
            if label not in ("—", "", None):
                break
            await asyncio.sleep(0.1)
        shown_after = time.time() - t0
        await asyncio.sleep(2.5)  # at least one more window: the page updates once per hop
        status = (await call("Runtime.evaluate", expression="document.getElementById('conf').textContent",
                             returnByValue=True))["result"]["value"]
        shot = await call("Page.captureScreenshot", format="png")
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        return label, status, shown_after


def test_the_page_shows_the_emotion_from_a_fake_camera(server, face, speech, tmp_path):  # noqa: F811
    base, _ = server
    video, audio = _fake_media(tmp_path, face, speech)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    browser = subprocess.Popen([
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--remote-debugging-port={port}",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}",
        "--autoplay-policy=no-user-gesture-required", "--window-size=1000,560", "about:blank",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        label, status, shown_after = asyncio.run(_drive(port, f"{base}/?autostart&hop=1"))
    finally:
        browser.terminate()
        browser.wait(timeout=20)
    assert label in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"), label
    assert "confidence" in status
    # The first window needs 3.6 s of media; the headless browser encoding the fake camera shares
    # this machine's 2 cores with the server, so the bound here is looser than the 5 s aimed at.
    assert shown_after < 15, shown_after
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"label {label!r} shown {shown_after:.1f} s after opening the page; screenshot {SCREENSHOT}")

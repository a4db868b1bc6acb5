"""`mer-serve` started for real (uvicorn on loopback), hit with real clips and bad uploads."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(exported):
    yield from _serve(exported("ia"))


def _serve(model, *extra: str):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mer.runtime.serve", "--port", str(port), "--model", model,
                             "--threads", "1", "--queue", "1", "--max-mb", "5", "--max-seconds", "30", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.3)
    try:
        yield base, proc
    finally:  # also when a test closes the generator early
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def clip(clip_factory):
    return clip_factory("serve.mp4", seconds=5.0, size=(640, 360))


def test_health_and_metrics(server):
    base, _ = server
    health = httpx.get(f"{base}/healthz").json()
    assert health["status"] == "ok" and health["model"] == "ia"
    text = httpx.get(f"{base}/metrics").text
    assert "mer_in_flight" in text and "mer_requests_total" in text


def test_recognize_raw_bytes_and_multipart_give_the_cli_record(server, clip, exported):
    base, _ = server
    data = clip.read_bytes()
    raw = httpx.post(f"{base}/v1/recognize", content=data, headers={"content-type": "video/mp4"}, timeout=120)
    assert raw.status_code == 200, raw.text
    form = httpx.post(f"{base}/v1/recognize", files={"file": ("talk.mp4", data, "video/mp4")}, timeout=120)
    assert form.status_code == 200, form.text
    # As `curl --data-binary @clip.mp4 URL` sends it (the README's command): curl labels the bytes a form.
    as_curl = httpx.post(f"{base}/v1/recognize", content=data, timeout=120,
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert as_curl.status_code == 200, as_curl.text
    assert {k: v for k, v in as_curl.json().items() if k != "timings_ms"} == \
        {k: v for k, v in raw.json().items() if k != "timings_ms"}
    cli = subprocess.run([sys.executable, "-m", "mer.runtime.cli", clip, "--json", "--model", exported("ia")],
                         capture_output=True, text=True, timeout=300)
    expected = json.loads(cli.stdout)
    for record in (raw.json(), form.json()):
        assert record["label"] == expected["label"]
        assert record["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
        assert record["window"] == expected["window"] and record["faces_detected"] == expected["faces_detected"]
    assert form.json()["file"] == "talk.mp4"
    assert "mer_stage_seconds_bucket" in httpx.get(f"{base}/metrics").text


def test_the_service_reads_a_face_without_a_voice_alone_unless_told_not_to(server, exported, face, tmp_path):
    from media import noise, place_face, write_clip

    frames = [place_face(face, 640, 360, i / 25) for i in range(100)]
    data = write_clip(tmp_path / "hum.mp4", frames, 25.0, audio=noise("brown", 4.0, -30)).read_bytes()
    base, _ = server
    gated = httpx.post(f"{base}/v1/recognize", content=data, timeout=120).json()
    assert gated["audio"] is False and any("no voice" in w for w in gated["warnings"])
    ungated_server = _serve(exported("ia"), "--no-voice-gate")
    try:
        other, _ = next(ungated_server)
        heard = httpx.post(f"{other}/v1/recognize", content=data, timeout=120).json()
    finally:
        ungated_server.close()  # stops that server
    assert heard["audio"] is True and not any("no voice" in w for w in heard["warnings"])


def test_timeline_streams_one_record_per_window(server, clip):
    base, _ = server
    with httpx.stream("POST", f"{base}/v1/recognize?timeline=true&hop=1", content=clip.read_bytes(),
                      timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [r["window"][0] for r in lines] == pytest.approx([0, 1, 1.4])
    assert all(r["timeline"] for r in lines)


@pytest.mark.parametrize("case, status, words", [
    ("garbage", 422, "not a readable media"),
    ("empty", 422, "empty body"),
    ("text", 415, "not media"),
    ("too_large", 413, "too large"),
    ("too_large_no_length", 413, "too large"),
    ("no_file_field", 422, "no field 'file'"),
    ("bad_hop", 422, "hop"),
])
def test_bad_uploads_are_4xx_with_a_reason_and_the_server_stays_up(server, clip, case, status, words):
    base, proc = server
    url = f"{base}/v1/recognize"
    if case == "garbage":
        r = httpx.post(url, content=os.urandom(20_000), timeout=60)
    elif case == "empty":
        r = httpx.post(url, content=b"", timeout=60)
    elif case == "text":
        r = httpx.post(url, content=b"hello", headers={"content-type": "Text/Plain; charset=utf-8"}, timeout=60)
    elif case == "too_large":
        r = httpx.post(url, content=b"\0" * (6 * 2**20), timeout=60)
    elif case == "too_large_no_length":
        r = httpx.post(url, content=iter([b"\0" * 2**20] * 7), timeout=60)  # chunked: no Content-Length
    elif case == "no_file_field":
        r = httpx.post(url, files={"other": ("x.mp4", clip.read_bytes(), "video/mp4")}, timeout=60)
    else:
        r = httpx.post(f"{url}?timeline=true&hop=0", content=clip.read_bytes(), timeout=60)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert proc.poll() is None and httpx.get(f"{base}/healthz").status_code == 200


def test_overload_is_503_with_retry_after_quickly(server, clip, clip_factory):
    """One worker thread and one queue place: a third concurrent request is refused at once."""
    base, _ = server
    data = clip_factory("serve_long.mp4", seconds=25.0, size=(640, 360)).read_bytes()
    codes: list[int] = []

    def post():
        codes.append(httpx.post(f"{base}/v1/recognize?timeline=true&hop=0.5", content=data, timeout=120).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    refused = httpx.post(f"{base}/v1/recognize", content=data, timeout=60)
    took = time.perf_counter() - t0
    for t in threads:
        t.join()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert took < 2.0
    assert codes == [200, 200]


def test_a_client_that_disconnects_mid_upload_leaves_nothing_behind(server, clip):
    import glob
    import tempfile

    base, proc = server
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "mer-upload-*")))
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n" + b"\0" * 100_000)
        time.sleep(0.5)
    time.sleep(1.0)
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "mer-upload-*")))
    assert after <= before
    assert proc.poll() is None and httpx.get(f"{base}/healthz").status_code == 200


def test_live_websocket_streams_records_back(server, clip_factory):
    import asyncio

    import websockets

    base, _ = server
    webm = clip_factory("browser.webm", seconds=6.0, size=(320, 240), codec="libvpx-vp9")
    data = webm.read_bytes()

    async def talk():
        records = []
        async with websockets.connect(base.replace("http", "ws") + "/v1/live?hop=1", max_size=None) as ws:
            for i in range(0, len(data), 32_000):  # chunks, as a MediaRecorder sends them
                await ws.send(data[i:i + 32_000])
                await asyncio.sleep(0.05)
            await ws.send("end")
            async for message in ws:
                records.append(json.loads(message))
        return records

    records = asyncio.run(asyncio.wait_for(talk(), 120))
    assert records and all("label" in r and "latency_ms" in r for r in records), records
    assert records[0]["window"][0] == 0.0


def test_the_page_is_served(server):
    base, _ = server
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "getUserMedia" in page.text and "/v1/live" in page.text

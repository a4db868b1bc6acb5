"""The same HTTP app on Ray Serve (a local Ray with 2 CPUs): healthy, recognises, refuses garbage."""
from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")


def test_the_app_deploys_on_ray_serve(exported, clip_factory, monkeypatch):
    import json

    import ray
    from ray import serve

    monkeypatch.setenv("MER_SERVE_SETTINGS", json.dumps({"model": str(exported("ia"))}))
    clip = clip_factory("ray_serve.mp4", seconds=4.0, size=(640, 360))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        from mer.runtime.serve_ray import deployment

        serve.run(deployment, blocking=False)
        base = f"http://127.0.0.1:{port}"
        deadline, health = time.time() + 120, None
        while time.time() < deadline:
            try:
                health = httpx.get(f"{base}/healthz", timeout=3)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert health is not None and health.json()["model"] == "ia"
        ok = httpx.post(f"{base}/v1/recognize", content=clip.read_bytes(), timeout=120)
        assert ok.status_code == 200 and ok.json()["faces_detected"] == 15, ok.text
        bad = httpx.post(f"{base}/v1/recognize", content=b"garbage" * 100, timeout=60)
        assert bad.status_code == 422 and "media" in bad.json()["error"]
    finally:
        serve.shutdown()
        ray.shutdown()

"""The same HTTP app as `mer-serve`, deployed on Ray Serve (replicas across a cluster's nodes).

    serve run mer.runtime.serve_ray:deployment                       # local Ray
    MER_SERVE_REPLICAS=4 serve run mer.runtime.serve_ray:deployment   # on a cluster (RAY_ADDRESS)

Each replica is one FastAPI app (`serve.create_app`) with its own recogniser thread(s); Ray Serve
routes requests between replicas and bounds what waits for each (max_ongoing_requests, then
its own back-pressure), so the app's 503 + Retry-After still answers a replica that is full.
Settings come from MER_SERVE_SETTINGS (JSON, as `mer-serve` writes it) on every node.
"""
import os

from ray import serve

from .serve import Settings, create_app

_settings = Settings.from_env()
_replicas = int(os.environ.get("MER_SERVE_REPLICAS", "1"))


@serve.deployment(num_replicas=_replicas, ray_actor_options={"num_cpus": _settings.threads},
                  max_ongoing_requests=_settings.threads + _settings.queue + 1)
@serve.ingress(create_app(_settings))
class MerService:
    """A replica: the app's routes, served by Ray Serve's HTTP proxy."""


deployment = MerService.bind()

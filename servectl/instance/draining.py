"""Drain before stopping: ``servectl serve`` (the container's command) on SIGTERM.

TorchServe's own shutdown closes every client connection at once (ModelServer.stop closes all
channels), so a request still queued or in a worker fails. servectl therefore waits, before it
stops the server, until no request is queued for any version of the model and no new one
arrived for ``stop.quiet_seconds``, for at most ``stop.timeout_seconds`` (serve_config/lifecycle.yaml).
Where the platform stops sending first (Kubernetes removes the pod from its endpoints; nginx
sends elsewhere), that is every request the server accepted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import requests

from common.prometheus import metric_sums
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.management import Management
from servectl.waiting import WaitTimeout, wait_for

TS_REQUESTS = "ts_inference_requests_total"


def requests_counted(settings: ServeSettings, versions: Iterable[str]) -> float:
    """TorchServe's ts_inference_requests_total for ``versions`` of the model (its frontend's
    count), summed, from one scrape of its metrics API."""
    try:
        text = requests.get(f"{settings.metrics.url}/metrics", timeout=5).text
    except requests.RequestException as exc:
        raise ServeError(f"metrics API not answering: {exc}") from None
    where = {"model_name": settings.model_name}
    return sum(metric_sums(text, [TS_REQUESTS], {**where, "model_version": v})[TS_REQUESTS] for v in versions)


def quiet_for(settings: ServeSettings, api: Management, quiet_s: float, only: str | None = None) -> bool:
    """True when no request is pending for the model's loaded versions (``only``: that one)
    and none arrived during ``quiet_s`` seconds: what a retire and a stop both wait for."""
    chosen = {v: d for v, d in api.versions().items() if only is None or v == only}
    if any(int(d.get("jobQueueStatus", {}).get("pendingRequests", 0)) for d in chosen.values()):
        return False
    before = requests_counted(settings, chosen)
    time.sleep(quiet_s)  # the quiet period itself, not a wait for a condition
    return requests_counted(settings, chosen) == before


def drain(settings: ServeSettings) -> bool:
    """Wait until the model is quiet; True if it was within the timeout (False: stop anyway)."""
    stop = settings.lifecycle.stop
    api = Management(settings)

    def quiet() -> bool:
        try:
            return quiet_for(settings, api, stop.quiet_seconds)
        except (ServeError, requests.RequestException):
            return True  # the server no longer answers: nothing is left to wait for

    try:
        wait_for(quiet, stop.timeout_seconds, "the model to drain", interval=0.1)
    except WaitTimeout:
        return False
    return True

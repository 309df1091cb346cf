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
from pathlib import Path
from typing import Any

import requests
import yaml

from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.management import Management
from servectl.release.lifecycle import LIFECYCLE_CONFIG, requests_counted
from servectl.waiting import WaitTimeout, wait_for


def stop_config(path: Path = LIFECYCLE_CONFIG) -> tuple[float, float]:
    """(quiet_seconds, timeout_seconds) of the ``stop`` section."""
    doc = yaml.safe_load(path.read_text())["stop"]
    return float(doc["quiet_seconds"]), float(doc["timeout_seconds"])


def drain(settings: ServeSettings) -> bool:
    """Wait until the model is quiet; True if it was within the timeout (False: stop anyway)."""
    quiet_s, timeout_s = stop_config()
    api = Management(settings)

    def arrived(loaded: dict[str, dict[str, Any]]) -> float:
        return sum(requests_counted(settings, version) for version in loaded)

    def quiet() -> bool:
        try:
            loaded = api.versions()
            pending = sum(int(v.get("jobQueueStatus", {}).get("pendingRequests", 0)) for v in loaded.values())
            if pending:
                return False
            before = arrived(loaded)
            time.sleep(quiet_s)  # the quiet period itself, not a wait for a condition
            return arrived(loaded) == before
        except (ServeError, requests.RequestException):
            return True  # the server no longer answers: nothing is left to wait for

    try:
        wait_for(quiet, timeout_s, "the model to drain", interval=0.1)
    except WaitTimeout:
        return False
    return True

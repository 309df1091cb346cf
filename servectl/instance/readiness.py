"""Is the model serving? Readiness is the model's workers reported READY by the management
API, polled against a deadline: ``/ping`` answers Healthy while workers crash-loop, so it
proves nothing. A handler that refuses the model says so in a status file, read here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from common.load_status import read_refusal
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.management import Management
from servectl.waiting import WaitTimeout, wait_for


def model_status(settings: ServeSettings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The describe answer for the model, or None while it is not registered yet (or the
    management API does not answer)."""
    try:
        return Management(settings, timeout=timeout).describe()
    except ServeError:
        return None


def model_metrics_up(settings: ServeSettings, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{settings.model_metrics.url}/metrics", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def ready_workers(status: dict[str, Any] | None) -> int:
    if not status:
        return 0
    return sum(1 for w in status.get("workers", []) if w.get("status") == "READY")


def is_ready(status: dict[str, Any] | None) -> bool:
    """At least minWorkers (and at least one) workers READY: what start-up waits for."""
    wanted = max(1, int(status.get("minWorkers", 1))) if status else 1
    return ready_workers(status) >= wanted


def load_refusal(settings: ServeSettings, since: float = 0.0) -> str | None:
    """Why the handler refused the model (e.g. a sha256 mismatch), if it did since this start
    (``start`` removes a stale status file), or since ``since`` (a version being registered)."""
    return read_refusal(settings.load_status_file, settings.model_name, since)


def log_tail(settings: ServeSettings, lines: int = 25) -> str:
    chunks = []
    for name in ("model_log.log", "ts_log.log"):
        path = settings.log_dir / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- last lines of {path} ---\n" + "\n".join(tail))
    return "\n".join(chunks) or f"(no logs in {settings.log_dir})"


def wait_ready(
    settings: ServeSettings,
    timeout: float = 120.0,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.25,
) -> dict[str, Any]:
    """Poll until the model has minWorkers READY workers and the exporter answers; stop at once
    when TorchServe exits or the handler refuses the model, and say why in every case."""
    seen: dict[str, Any] | None = None

    def ready() -> dict[str, Any] | None:
        nonlocal seen
        if not alive():
            raise ServeError("TorchServe exited during start-up\n" + log_tail(settings))
        refused = load_refusal(settings)
        if refused:  # workers would crash-loop until maxRetryTimeoutInSec: say why now
            raise ServeError(f"model {settings.model_name!r} refused to load: {refused}")
        seen = model_status(settings)
        return seen if is_ready(seen) and model_metrics_up(settings) else None

    try:
        return wait_for(ready, timeout, f"model {settings.model_name!r} READY", interval=interval)
    except WaitTimeout:
        raise ServeError(not_ready(settings, seen, timeout)) from None


def not_ready(settings: ServeSettings, status: dict[str, Any] | None, timeout: float) -> str:
    """What was missing when the READY deadline passed: the exporter, or READY workers."""
    if is_ready(status):
        return (
            f"the model-metrics exporter did not answer on {settings.model_metrics.url}/metrics "
            f"after {timeout:.0f}s (see {settings.run_dir}/torchserve.out)"
        )
    workers = [w.get("status") for w in (status or {}).get("workers", [])]
    return (
        f"model {settings.model_name!r} had no READY workers after {timeout:.0f}s "
        f"(workers: {workers or 'none registered'})\n" + log_tail(settings)
    )

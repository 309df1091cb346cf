"""serve_config/lifecycle.yaml, typed: what every rollout, rollback, retire, canary, watch and
stop reads. Loaded and validated as a whole by :func:`load` (a bad value fails the command with
the file and key named); the values live in the file only, none is repeated here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from common.settings_file import Settings, load_section
from servectl.config.paths import SERVE_CONFIG

LIFECYCLE_CONFIG = SERVE_CONFIG / "lifecycle.yaml"


class Quiet(Settings):
    """A wait for quiet: no pending request and none arriving for ``quiet_seconds``, at most
    ``timeout_seconds`` (``drain``: before a retire unloads a version; ``stop``: before a stop)."""

    quiet_seconds: float = Field(ge=0)
    timeout_seconds: float = Field(gt=0)


class Proxy(Settings):
    expose_pinned_versions: bool


class Watch(Settings):
    """The watcher's window and the thresholds of an automatic rollback (servectl.release.watcher)."""

    auto: bool
    window_seconds: float = Field(gt=0)
    interval_seconds: float = Field(gt=0)
    min_requests: int = Field(ge=0)
    max_error_ratio: float = Field(ge=0, le=1)
    max_p99_ratio: float = Field(gt=0)
    max_class_shift: float = Field(ge=0, le=1)
    max_failed_ticks: int = Field(ge=1)
    max_worker_deaths: int = Field(ge=0)


class Lifecycle(Settings):
    max_loaded_versions: int = Field(ge=1)
    preflight_accuracy_slack: float = Field(ge=0)
    drain: Quiet
    lock_timeout_seconds: float = Field(gt=0)
    canary_percent: float = Field(ge=0, le=100)
    proxy: Proxy
    watch: Watch
    stop: Quiet
    log_format: Literal["text", "json"]  # servectl's progress lines


def load(path: Path = LIFECYCLE_CONFIG) -> Lifecycle:
    """The lifecycle settings in ``path`` (by default the shipped serve_config one)."""
    return load_section(Lifecycle, path)

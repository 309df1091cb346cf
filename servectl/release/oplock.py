"""One lock per run folder around every lifecycle operation (rollout, rollback, retire, canary,
promote, abandon, restore) and around the watcher's rollback.

Without it two operations each read the record, act on TorchServe and save over the other's:
after the watcher rolled a bad version back, an operator's rollback made it the default again,
and a promote during a canary breach left a record that named the wrong default (issue 25).

filelock's ``FileLock`` is an ``flock`` on ``RUN_DIR/lifecycle.lock``: the kernel drops it when
its holder dies, so a killed servectl never leaves a stale lock behind. One instance per path
(``is_singleton``) makes it reentrant within a process, so an operation may call another (a
rollout retires a spare version first).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from servectl.config.settings import ServeSettings
from servectl.errors import ServeError

LOCK_FILE = "lifecycle.lock"


def lock_of(settings: ServeSettings) -> FileLock:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(settings.run_dir / LOCK_FILE, is_singleton=True)


@contextmanager
def held(settings: ServeSettings, timeout: float) -> Iterator[None]:
    """Hold the instance's lifecycle lock, waiting at most ``timeout`` seconds for it."""
    lock = lock_of(settings)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ServeError(
            f"another lifecycle operation has held {lock.lock_file} for over {timeout:g} s: "
            "let it finish (serve_config/lifecycle.yaml lock_timeout_seconds)"
        ) from None
    try:
        yield
    finally:
        lock.release()

"""TorchServe's API keys, for calls to an instance that has token auth turned on."""

from __future__ import annotations

import json
from pathlib import Path

from servectl.config.settings import ServeSettings


def keys(settings: ServeSettings) -> dict[str, str]:
    """TorchServe's current keys of this instance ({} when token auth is off)."""
    return read_keys(settings.key_file)


def read_keys(path: Path) -> dict[str, str]:
    """TorchServe's current keys from its key_file.json ({} when token auth is off).

    TorchServe 0.12 writes ``{"management": {"key": ..., "expiration time": ...},
    "inference": {...}, "API": {"key": ...}}`` into its working directory (the run dir) at
    start-up; read while it is being written the file can be empty or cut short, which
    means "no keys yet", not an error.
    """
    if not path.is_file():  # start() removes a stale one; only a token-auth server writes it
        return {}
    try:
        data = json.loads(path.read_text())
        return {kind: data[kind]["key"] for kind in ("inference", "management", "API") if kind in data}
    except (ValueError, KeyError, TypeError):
        return {}


def auth_headers(settings: ServeSettings, kind: str) -> dict[str, str]:
    """The Authorization header for the ``kind`` API ({} when token auth is off)."""
    key = keys(settings).get(kind)
    return {"Authorization": f"Bearer {key}"} if key else {}

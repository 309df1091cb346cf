"""TorchServe's management API for the versions of one model: describe, register from the
model store, set the default, unregister. Every call goes to the loopback management port
with the instance's management key (when token auth is on)."""

from __future__ import annotations

from typing import Any

import requests

from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.tokens import auth_headers
from servectl.store import digests


class Management:
    def __init__(self, settings: ServeSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.base = f"{settings.management.url}/models/{settings.model_name}"
        self.timeout = timeout

    def _call(self, method: str, target: str, **params: Any) -> requests.Response:
        try:
            return requests.request(
                method, target, params=params, headers=auth_headers(self.settings, "management"), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ServeError(f"management API at {self.settings.management.url} not answering: {exc}") from None

    def versions(self) -> dict[str, dict[str, Any]]:
        """Every loaded version's describe answer, by version ({} when none is loaded)."""
        resp = self._call("GET", f"{self.base}/all")
        if resp.status_code == 404:
            return {}
        _check(resp, "list the versions")
        return {str(m["modelVersion"]): m for m in resp.json()}

    def describe(self) -> dict[str, Any] | None:
        """The default version's describe answer (None while the model is not registered)."""
        resp = self._call("GET", self.base)
        if resp.status_code != 200:
            return None
        data = resp.json()
        return data[0] if isinstance(data, list) and data else None

    def default_version(self) -> str | None:
        described = self.describe()
        return str(described["modelVersion"]) if described else None

    def register(self, archive_file: str, workers: int) -> None:
        """Load an archive of the model store (a bare file name: TorchServe refuses paths and
        URLs outside allowed_urls) next to the loaded versions, without waiting for workers;
        refused before TorchServe is asked when its digest is not the one recorded at build."""
        digests.verify(self.settings.model_store / archive_file)
        resp = self._call(
            "POST",
            f"{self.settings.management.url}/models",
            url=archive_file,
            model_name=self.settings.model_name,
            initial_workers=workers,
            synchronous="false",
        )
        _check(resp, f"register {archive_file}")

    def set_default(self, version: str) -> None:
        _check(self._call("PUT", f"{self.base}/{version}/set-default"), f"make {version} the default")

    def unregister(self, version: str) -> None:
        _check(self._call("DELETE", f"{self.base}/{version}"), f"unload {version}")


def _check(resp: requests.Response, what: str) -> None:
    if resp.status_code >= 300:
        try:
            message = resp.json().get("message", resp.text)
        except ValueError:
            message = resp.text
        raise ServeError(f"TorchServe refused to {what}: {resp.status_code} {message}")

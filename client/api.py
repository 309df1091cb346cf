"""A small Python client for the served model, built on ``requests``.

Class names come from the server's answers and its model card; the client copies no
feature or class list. Every call has one retry budget (``client.retrying``: attempts and
total time) and resends only what is safe: a connection that never opened, 503 (no worker free,
the queue full) and TorchServe's 500/507 "Worker died." (predictions are pure functions of the
body); a read timeout, a dropped connection and every other answer raise
:class:`PredictionError` at once, carrying the server's status, type and message.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import requests
from urllib3.exceptions import NewConnectionError

from client.retrying import Budget, retrying

JSON = "application/json"
NPY = "application/x-npy"
WORKER_DIED = "Worker died."  # TorchServe's message for the requests in flight on a dead worker
UNREACHABLE = "unreachable"  # PredictionError.type of a connection that never opened
NO_ANSWER = "no_answer"  # ... of one that was sent but timed out or dropped before its answer


class PredictionError(Exception):
    """The server refused or failed a call; ``status`` 0 means it could not be reached."""

    def __init__(self, status: int, type_: str, message: str, request_id: str | None = None) -> None:
        text = f"{status} {type_}: {message}" if status else message
        # the ID the server's logs, traces and prediction log know this request by
        super().__init__(f"{text} (request ID {request_id})" if request_id else text)
        self.status = status
        self.type = type_
        self.message = message
        self.request_id = request_id

    @property
    def worker_died(self) -> bool:
        """TorchServe's answer to the requests in flight on a worker that died (500 or 507)."""
        return self.status in (500, 507) and self.message.strip() == WORKER_DIED

    @property
    def transient(self) -> bool:
        """Safe and worth resending: the connection never opened (the server saw nothing), 503
        (no worker free or the queue full: refused before any work), or a dead worker."""
        return (self.status == 0 and self.type == UNREACHABLE) or self.status == 503 or self.worker_died


@dataclass(frozen=True)
class ClientConfig:
    inference_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    model: str = "tabular_classifier"
    version: str | None = None
    token: str | None = None  # sent as a Bearer token when the server wants one
    connect_timeout: float = 3.05
    read_timeout: float = 30.0
    retries: int = 3  # resends per call on top of the first attempt
    backoff: float = 0.2  # first backoff sleep (doubling, at most client.retrying.MAX_WAIT_S)
    retry_seconds: float = 30.0  # no resend starts later than this after the call's first attempt

    @classmethod
    def from_env(cls, **overrides: Any) -> ClientConfig:
        """MODEL_URL, MODEL_MANAGEMENT_URL, MODEL_NAME, MODEL_TOKEN override the defaults."""
        env = {
            "inference_url": os.environ.get("MODEL_URL"),
            "management_url": os.environ.get("MODEL_MANAGEMENT_URL"),
            "model": os.environ.get("MODEL_NAME"),
            "token": os.environ.get("MODEL_TOKEN") or None,
        }
        values: dict[str, Any] = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Prediction:
    label: str
    class_id: int
    probabilities: dict[str, float]


@dataclass
class Predictions:
    model_name: str
    model_version: str
    rows: list[Prediction] = field(default_factory=list)


@dataclass
class Scores:
    """A bulk answer: the probabilities as one float32 array [rows, classes]."""

    model_version: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray

    @property
    def labels(self) -> list[str]:
        names = self.class_names
        return [names[i] for i in self.probabilities.argmax(axis=1).tolist()]


@dataclass
class Explanation:
    """One row's attributions: why the model gives ``target`` the probability it does."""

    label: str
    class_id: int
    probabilities: dict[str, float]
    target: str
    attributions: dict[str, float]  # by feature name; they sum to output_at_row - output_at_baseline
    baseline: dict[str, float]
    output_at_row: float
    output_at_baseline: float
    approximation_error: float
    steps: int

    def ranked(self) -> list[tuple[str, float]]:
        """(feature, attribution), largest absolute attribution first."""
        return sorted(self.attributions.items(), key=lambda kv: abs(kv[1]), reverse=True)


@dataclass
class Explanations:
    model_name: str
    model_version: str
    method: str
    rows: list[Explanation] = field(default_factory=list)


class Client:
    """``cancel``: set it (from any thread) to end the calls' backoff sleeps and resends at once."""

    def __init__(self, config: ClientConfig | None = None, cancel: threading.Event | None = None) -> None:
        self.config = config or ClientConfig()
        self.cancel = cancel
        self.session = requests.Session()  # its adapters never resend: client.retrying does, once
        if self.config.token:
            self.session.headers["Authorization"] = f"Bearer {self.config.token}"

    # ------------------------------------------------------------ calls

    @property
    def predict_url(self) -> str:
        version = f"/{self.config.version}" if self.config.version else ""
        return f"{self.config.inference_url}/predictions/{self.config.model}{version}"

    @overload
    def predict(self, rows: Any, binary: Literal[False] = False) -> Predictions: ...
    @overload
    def predict(self, rows: Any, binary: Literal[True]) -> Scores: ...

    def predict(self, rows: Any, binary: bool = False) -> Predictions | Scores:
        """Rows in feature order, dicts of named features, or a DataFrame-like table.

        ``binary=True``: the rows go as a float32 .npy array and the answer comes back as
        one (:class:`Scores`), the fast path for many rows (rows must then be numbers in
        feature order)."""
        if binary:
            return self.predict_array(np.asarray(rows.tolist() if hasattr(rows, "tolist") else rows))
        return self._predictions(self.post(JSON, json_body({"instances": to_instances(rows)})))

    def predict_csv(self, path: str | Path) -> Predictions:
        return self._predictions(self.post("text/csv", Path(path).read_bytes()))

    def predict_npy(self, array: Any) -> Predictions:
        return self._predictions(self.post(NPY, npy_body(array)))

    def predict_array(self, array: Any) -> Scores:
        """A float32 array [rows, features] in, the probabilities [rows, classes] out, both .npy."""
        return self.scores(self.post_for(NPY, npy_body(array), accept=NPY))

    def post(self, content_type: str, body: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = self.post_for(content_type, body).json()
        return answer

    def post_for(
        self,
        content_type: str,
        body: bytes,
        accept: str | None = None,
        retries: int | None = None,
        on_resend: Callable[[], None] | None = None,
    ) -> requests.Response:
        """POST a prediction; a transient failure is resent up to ``retries`` times (default the
        config's) within the config's retry_seconds, calling ``on_resend`` before each resend."""
        headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        return self._request("POST", self.predict_url, retries, on_resend, data=body, headers=headers)

    @staticmethod
    def scores(resp: requests.Response) -> Scores:
        """A .npy answer, with the class names and version from its headers."""
        array = np.load(io.BytesIO(resp.content), allow_pickle=False)
        names = tuple(json.loads(resp.headers["X-Class-Names"]))
        return Scores(resp.headers.get("X-Model-Version", ""), names, array)

    @property
    def explain_url(self) -> str:
        version = f"/{self.config.version}" if self.config.version else ""
        return f"{self.config.inference_url}/explanations/{self.config.model}{version}"

    def explain(self, rows: Any, target: str | int | None = None, baseline: Any = None) -> Explanations:
        """Feature attributions per row (Integrated Gradients on the server).

        ``target``: the class to explain (name or id; default each row's predicted class).
        ``baseline``: "mean" (the server's default, the training mean), "zeros", or a row.
        """
        doc: dict[str, Any] = {"instances": to_instances(rows)}
        if target is not None:
            doc["target"] = target
        if baseline is not None:
            doc["baseline"] = _row(baseline) if not isinstance(baseline, str) else baseline
        return self._explanations(
            self._call("POST", self.explain_url, data=json_body(doc), headers={"Content-Type": JSON})
        )

    def explain_csv(self, path: str | Path, target: str | int | None = None) -> Explanations:
        """Attributions for the rows of a CSV file (the target goes in the X-Explain-Target header)."""
        headers = {"Content-Type": "text/csv"}
        if target is not None:
            headers["X-Explain-Target"] = str(target)
        return self._explanations(self._call("POST", self.explain_url, data=Path(path).read_bytes(), headers=headers))

    @staticmethod
    def _explanations(answer: dict[str, Any]) -> Explanations:
        return Explanations(
            answer["model_name"],
            answer["model_version"],
            answer.get("method", ""),
            [Explanation(**{k: e[k] for k in Explanation.__dataclass_fields__}) for e in answer["explanations"]],
        )

    def metadata(self) -> dict[str, Any]:
        """The model card (feature names, training ranges, classes, version, metrics).

        TorchServe serves it on the management API only, which a deployment keeps on loopback
        inside the container (README: Running in production): there this raises a
        PredictionError saying so, and the card is read where that port is reachable.
        """
        url = f"{self.config.management_url}/models/{self.config.model}"
        if self.config.version:
            url += f"/{self.config.version}"
        answer = self._management_call(url, params={"customized": "true"})
        return dict(answer[0]["customizedMetadata"])

    def versions(self) -> list[dict[str, Any]]:
        """Every loaded version of the model: version, default or not, READY workers (the
        management API; ``make versions`` adds the versions built but not loaded)."""
        default = self._management_call(f"{self.config.management_url}/models/{self.config.model}")[0]
        loaded = self._management_call(f"{self.config.management_url}/models/{self.config.model}/all")
        return [
            {
                "version": m.get("modelVersion"),
                "default": m.get("modelVersion") == default.get("modelVersion"),
                "ready_workers": sum(1 for w in m.get("workers", []) if w.get("status") == "READY"),
            }
            for m in loaded
        ]

    def health(self) -> dict[str, Any]:
        """Liveness from /ping on the inference URL (what a proxy publishes), plus the model's
        READY workers when the management API is reachable (``ready`` is None when it is not)."""
        ping = self._call("GET", f"{self.config.inference_url}/ping")
        health: dict[str, Any] = {"server": ping.get("status"), "model": self.config.model, "ready": None}
        try:
            status = self._management_call(f"{self.config.management_url}/models/{self.config.model}")[0]
        except PredictionError as exc:
            if exc.status:
                raise
            return {**health, "detail": exc.message}
        ready = sum(1 for w in status.get("workers", []) if w.get("status") == "READY")
        # the rule servectl.instance.readiness.is_ready applies (tests/integration/test_client.py checks they agree)
        return {
            **health,
            "version": status.get("modelVersion"),
            "ready_workers": ready,
            "min_workers": status.get("minWorkers"),
            "ready": ready >= max(1, int(status.get("minWorkers", 1))),
        }

    def _management_call(self, url: str, **kwargs: Any) -> Any:
        try:
            return self._call("GET", url, **kwargs)
        except PredictionError as exc:
            if exc.status:
                raise
            raise PredictionError(
                0,
                "unreachable",
                f"the management API at {self.config.management_url} did not answer ({exc.message}); it serves "
                "the model card and worker states, and deployments keep it on loopback inside the container: "
                "call this where that port is reachable (the make serve host, kubectl port-forward)",
            ) from exc

    # ------------------------------------------------------------ plumbing

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._request(method, url, **kwargs).json()

    def _request(
        self,
        method: str,
        url: str,
        retries: int | None = None,
        on_resend: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One call within its budget, transient failures resent: every call of this client."""
        attempts = (self.config.retries if retries is None else retries) + 1
        budget = Budget(attempts, self.config.retry_seconds, self.config.backoff)
        resend = retrying(budget, is_transient, self.cancel, on_resend)
        response: requests.Response = resend(self._attempt, method, url, **kwargs)
        return response

    def _attempt(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        try:
            resp = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            raise connection_error(exc, f"{method} {url}") from exc
        if resp.status_code >= 400:
            raise error_from(resp)
        return resp

    @staticmethod
    def _predictions(body: dict[str, Any]) -> Predictions:
        return Predictions(
            body["model_name"],
            body["model_version"],
            [Prediction(p["label"], p["class_id"], p["probabilities"]) for p in body["predictions"]],
        )


def is_transient(exc: BaseException) -> bool:
    """What every call resends: see ``PredictionError.transient``."""
    return isinstance(exc, PredictionError) and exc.transient


def connection_error(exc: requests.RequestException, what: str) -> PredictionError:
    """``unreachable`` when the connection never opened (refused, connect timeout: the server saw
    nothing), else ``no_answer`` (a read timeout or a dropped connection: it may have run)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    never_sent = isinstance(exc, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)
    return PredictionError(0, UNREACHABLE if never_sent else NO_ANSWER, f"{what} failed: {exc}")


def error_from(resp: requests.Response) -> PredictionError:
    """The server's JSON error when there is one, else its status line; with the request's ID
    (the body's, else the X-Request-ID answer header, which TorchServe's own errors carry)."""
    header = resp.headers.get("X-Request-ID")
    try:
        body = resp.json()
        rid = str(body.get("request_id") or header or "") or None
        return PredictionError(resp.status_code, str(body["type"]), str(body["message"]), rid)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text.strip() or resp.reason or "no message"
        return PredictionError(resp.status_code, "http_error", text[:500], header)


def to_instances(rows: Any) -> list[Any]:
    """Accept lists of rows, lists of dicts, or anything with ``to_dict("records")``."""
    if hasattr(rows, "to_dict"):
        return list(rows.to_dict("records"))
    if hasattr(rows, "tolist"):
        instances: list[Any] = rows.tolist()
        return instances
    rows = list(rows) if isinstance(rows, Iterable) and not isinstance(rows, (str, bytes, Mapping)) else rows
    if not isinstance(rows, list):
        raise TypeError(f"expected rows (a list), got {type(rows).__name__}")
    return [_row(r) for r in rows]


def _row(row: Any) -> Any:
    if isinstance(row, Mapping):
        return dict(row)
    if isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
        return list(row)
    return row  # the server names what is wrong with it


def npy_body(array: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def json_body(doc: Any) -> bytes:
    # NaN goes out as-is so the server can say which value is not finite
    return json.dumps(doc, allow_nan=True).encode()

"""A mixed load of valid and invalid requests against one TorchServe, every answer checked.

Valid requests carry random slices of the test split in every accepted format; their
probabilities must equal the in-process model's. Invalid requests (bad JSON, wrong shape,
NaN, unknown feature, wrong content type, ...) must get their documented 4xx. Used by the
30-second load test in ``make test`` (tests/reliability), by ``make soak`` (benchmarks/soak.py)
and by hand (``python -m benchmarks.loadmix``). Loopback only; bounded by ``duration``.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests

JSON = "application/json"


@dataclass(frozen=True)
class Case:
    """One request and what its answer must be."""

    kind: str
    path: str  # "predict" or "v2"
    body: bytes
    content_type: str
    status: int  # the expected HTTP status
    rows: tuple[int, int] | None = None  # slice of the reference rows a 200 must match


@dataclass
class Result:
    t: float  # seconds since the run started, when the answer arrived
    case: Case
    status: int  # 0 when no answer (connection error or client timeout)
    latency: float
    problem: str | None = None  # None when the answer was the expected one
    error_body: bytes = b""  # the answer's body when it was not a 200 (small JSON)
    version: str | None = None  # the X-Model-Version of the answer


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    t0: float = 0.0  # time.monotonic() when the run started: Result.t counts from here

    @property
    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.results)

    @property
    def server_errors(self) -> int:
        return sum(1 for r in self.results if r.status >= 500)

    @property
    def no_answer(self) -> int:
        return sum(1 for r in self.results if r.status == 0)

    @property
    def problems(self) -> list[Result]:
        return [r for r in self.results if r.problem]

    def latency_percentiles(self, results: list[Result] | None = None) -> dict[str, float]:
        lat = np.array([r.latency for r in (self.results if results is None else results)]) * 1000
        if not len(lat):
            return {}
        return {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)} | {
            "max": round(float(lat.max()), 2)
        }

    def summary(self) -> dict[str, Any]:
        kinds = Counter(r.case.kind for r in self.results)
        return {
            "requests": len(self.results),
            "seconds": round(self.seconds, 1),
            "per_second": round(len(self.results) / self.seconds, 1) if self.seconds else 0.0,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "no_answer": self.no_answer,
            "wrong_answers": len(self.problems),
            "valid_share": round(sum(v for k, v in kinds.items() if k.startswith("ok")) / max(1, len(self.results)), 2),
            "latency_ms": self.latency_percentiles(),
        }


class Mix:
    """Builds random cases from the reference rows ``x`` and the feature names."""

    def __init__(self, x: np.ndarray, feature_names: list[str], invalid_share: float = 0.3) -> None:
        self.x = np.asarray(x, dtype=np.float32)
        self.names = list(feature_names)
        self.invalid_share = invalid_share

    def case(self, rng: random.Random) -> Case:
        if rng.random() < self.invalid_share:
            return self.invalid(rng)
        return self.valid(rng)

    def valid(self, rng: random.Random) -> Case:
        n = rng.choice((1, 1, 2, 3, 5, 8, 32))
        start = rng.randrange(len(self.x) - n)
        rows = self.x[start : start + n]
        kind = rng.choice(("rows", "named", "csv", "csv_header", "npy", "v2", "v2_predict"))
        values = rows.tolist()
        body: str | bytes
        if kind == "rows":
            body, ctype = json.dumps({"instances": values}), JSON
        elif kind == "named":
            names = self.names[:]
            rng.shuffle(names)
            idx = {name: i for i, name in enumerate(self.names)}
            body = json.dumps({"instances": [{k: row[idx[k]] for k in names} for row in values]})
            ctype = JSON
        elif kind == "csv":
            body, ctype = "".join(",".join(map(repr, row)) + "\n" for row in values), "text/csv"
        elif kind == "csv_header":
            body = ",".join(self.names) + "\n" + "".join(",".join(map(repr, row)) + "\n" for row in values)
            ctype = "text/csv"
        elif kind == "npy":
            buf = io.BytesIO()
            np.save(buf, rows)
            body, ctype = buf.getvalue(), "application/x-npy"
        else:
            tensor = {"name": "x", "shape": [n, len(self.names)], "datatype": "FP32", "data": rows.flatten().tolist()}
            body, ctype = json.dumps({"id": f"r{start}", "inputs": [tensor]}), JSON
        raw = body if isinstance(body, bytes) else body.encode()
        return Case(f"ok_{kind}", "v2" if kind == "v2" else "predict", raw, ctype, 200, (start, start + n))

    def invalid(self, rng: random.Random) -> Case:
        row = self.x[rng.randrange(len(self.x))].tolist()
        f = len(self.names)
        wide = {"name": "x", "shape": [1, f + 1], "datatype": "FP32", "data": row}
        bad: list[tuple[str, str | bytes, str, int]] = [
            ("bad_json", '{"instances": [[1, 2,', JSON, 400),
            ("empty_body", "", JSON, 400),
            ("no_instances", '{"rows": []}', JSON, 400),
            ("empty_list", '{"instances": []}', JSON, 400),
            ("short_row", json.dumps({"instances": [row[:-1]]}), JSON, 400),
            ("long_row", json.dumps({"instances": [row + [1.0]]}), JSON, 400),
            ("nan", json.dumps({"instances": [[float("nan")] + row[1:]]}), JSON, 400),
            ("string_value", json.dumps({"instances": [["x"] + row[1:]]}), JSON, 400),
            ("boolean_value", json.dumps({"instances": [[True] + row[1:]]}), JSON, 400),
            ("huge_value", json.dumps({"instances": [[1e39] + row[1:]]}), JSON, 400),
            ("unknown_feature", json.dumps({"instances": [{**dict(zip(self.names, row)), "nope": 1}]}), JSON, 400),
            ("missing_feature", json.dumps({"instances": [dict(zip(self.names[1:], row[1:]))]}), JSON, 400),
            ("too_deep", json.dumps({"instances": [[[v] for v in row]]}), JSON, 400),
            ("bad_csv", "a,b\n1,2\n", "text/csv", 400),
            ("bad_npy", b"\x93NUMPY garbage", "application/x-npy", 400),
            ("wrong_type", json.dumps({"instances": [row]}), "text/plain", 415),
            ("form_encoded", "instances=1", "application/x-www-form-urlencoded", 415),
            ("v2_shape", json.dumps({"inputs": [wide]}), JSON, 400),
        ]
        kind, body, ctype, status = rng.choice(bad)
        raw = body if isinstance(body, bytes) else body.encode()
        return Case(kind, "predict", raw, ctype, status)


# the in-process probabilities of the reference rows: one array, or one per model version
# (keyed by the version the answer names in X-Model-Version, so a load can span a rollout)
Expected = np.ndarray | Mapping[str, np.ndarray]


def expected_for(expected: Expected, version: str | None) -> np.ndarray | None:
    """The reference output of the version that answered (None: a version nobody expected)."""
    if isinstance(expected, np.ndarray):
        return expected
    return expected.get(version or "")


def check(
    case: Case,
    status: int,
    body: bytes,
    expected: Expected,
    class_names: list[str],
    version: str | None = None,
    atol: float = 1e-5,
) -> str | None:
    """None when the answer is right, else what is wrong with it."""
    if status != case.status:
        return f"{case.kind}: status {status}, expected {case.status}: {body[:200]!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        return f"{case.kind}: answer is not JSON: {body[:200]!r}"
    if status != 200:
        return None if {"code", "type", "message"} <= set(doc) else f"{case.kind}: error body {doc}"
    assert case.rows is not None, f"{case.kind}: a case that expects 200 names its reference rows"
    start, stop = case.rows
    reference = expected_for(expected, version)
    if reference is None:
        return f"{case.kind}: answered by version {version!r}, expected one of {sorted(expected)}"
    if "outputs" in doc:
        out = {o["name"]: o for o in doc["outputs"]}["probabilities"]
        got = np.array(out["data"], dtype=np.float64).reshape(out["shape"])
    else:
        got = np.array([[p["probabilities"][c] for c in class_names] for p in doc["predictions"]])
    want = reference[start:stop]
    if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=atol):
        return f"{case.kind}: rows {start}:{stop} answered {got.tolist()[:2]}, expected {want.tolist()[:2]}"
    return None


def run(
    base_url: str,
    model_name: str,
    mix: Mix,
    expected: Expected,
    class_names: list[str],
    seconds: float,
    connections: int = 32,
    seed: int = 0,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    on_result: Callable[[Result], None] | None = None,
    atol: float = 1e-5,
) -> Report:
    """``connections`` threads, each with its own keep-alive session, until ``seconds`` pass."""
    host = urlsplit(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"{base_url}: load runs against loopback only")
    urls = {"predict": f"{base_url}/predictions/{model_name}", "v2": f"{base_url}/v2/models/{model_name}/infer"}
    report = Report(t0=time.monotonic())
    lock = threading.Lock()
    stop = stop or threading.Event()
    t0 = report.t0
    deadline = t0 + seconds  # how long to load the server, not a wait for a condition

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with requests.Session() as session:
            while time.monotonic() < deadline and not stop.is_set():
                case = mix.case(rng)
                sent = time.monotonic()
                try:
                    resp = session.post(
                        urls[case.path],
                        data=case.body,
                        headers={"Content-Type": case.content_type, **(headers or {})},
                        timeout=timeout,
                    )
                    status, body, version = resp.status_code, resp.content, resp.headers.get("X-Model-Version")
                except requests.RequestException as exc:
                    status, body, version = 0, str(exc).encode(), None
                now = time.monotonic()
                if status:
                    problem = check(case, status, body, expected, class_names, version, atol)
                else:
                    problem = f"{case.kind}: {body!r}"
                kept = body[:500] if status != 200 else b""
                result = Result(now - t0, case, status, now - sent, problem, kept, version)
                with lock:
                    report.results.append(result)
                if on_result:
                    on_result(result)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - t0
    return report


def reference(artifacts: str = "artifacts") -> tuple[np.ndarray, np.ndarray, list[str], list[str], str]:
    """Test rows, the in-process model's probabilities, feature and class names, model name."""
    import torch

    from common.model_card import METADATA_FILE, ModelCard

    card = ModelCard.load(f"{artifacts}/{METADATA_FILE}")
    x = torch.load(f"{artifacts}/test_split.pt", weights_only=True)["x"]
    model = torch.jit.load(f"{artifacts}/{card.model_file}").eval()
    with torch.inference_mode():
        probs = torch.softmax(model(x), 1).double().numpy()
    return x.numpy(), probs, list(card.feature_names), list(card.class_names), card.model_name

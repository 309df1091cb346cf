"""Issue 25 through a live TorchServe: requests crafted to poison their batch (a ``describe``
header, a body far over the row limit, values far outside the training range, a longdouble
.npy, a target TorchServe's handler once read with ``int()``) sent at once with innocent ones.
Each poisoned request gets its own 4xx, each innocent one its own correct answer, and no worker
is restarted; describes from the management API, which the frontend batches with predictions,
keep returning the model card."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from tests.conftest import ANSWER_TIMEOUT, PROBABILITY_ATOL
from tests.integration.conftest import frontend_metric, workers

JSON = "application/json"


@pytest.fixture(scope="module")
def untouched(live):
    return workers(live), frontend_metric(live, "Requests5XX")


@pytest.fixture(scope="module")
def expected(built_model, test_split) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(built_model(test_split["x"]), 1)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def poisoned(x: torch.Tensor, live) -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    """(path, content type, body, headers, status, type) of each crafted request."""
    row = x[0].tolist()
    huge = [3e38] + row[1:]
    return [
        ("predictions", JSON, b'{"instances": []}', {"describe": "True"}, 400, "empty_input"),
        ("predictions", "application/x-www-form-urlencoded", b"", {"describe": "True"}, 415, "unsupported_media_type"),
        ("legacy", "application/x-www-form-urlencoded", b"", {"describe": "True"}, 415, "unsupported_media_type"),
        ("predictions", "text/csv", oversize(4 << 20, len(row)), {}, 413, "too_many_rows"),  # what nginx passes
        ("predictions", JSON, json.dumps({"instances": [huge]}).encode(), {}, 400, "out_of_range"),
        ("predictions", "application/x-npy", npy(np.array([row], dtype=np.longdouble)), {}, 400, "invalid_npy"),
        ("explanations", JSON, json.dumps({"instances": [row]}).encode(), {"X-Explain-Target": "\u00b2"},
         400, "invalid_target"),
    ]  # fmt: skip


def oversize(size: int, n_features: int) -> bytes:
    """A CSV of ``size`` bytes: far over the row limit."""
    line = (",".join(["0.5"] * n_features) + "\n").encode()
    return line * (size // len(line))


def test_poisoned_requests_fail_alone_and_their_batches_answer_everyone_else(
    untouched, live, built_card, test_split, expected
):
    x = test_split["x"]
    base = live.inference.url
    bad = poisoned(x, live)
    jobs: list[tuple[int, object]] = [(i, bad[i % len(bad)] if i % 4 == 0 else None) for i in range(96)]
    limit = int(live.properties["max_request_size"])  # and one just under the frontend's limit
    jobs[49] = (49, ("predictions", "text/csv", oversize(limit - 1024, x.shape[1]), {}, 413, "too_many_rows"))

    def send(job):
        i, crafted = job
        if crafted is None:  # innocent; some carry the describe header a client may send
            headers = {"Content-Type": JSON, **({"describe": "True"} if i % 4 == 2 else {})}
            body = json.dumps({"instances": [x[i % len(x)].tolist()]}).encode()
            path = "predictions"
        else:
            path, content_type, body, extra, _, _ = crafted
            headers = {"Content-Type": content_type, **extra}
        name = built_card.model_name
        url = f"{base}/{name}/predict" if path == "legacy" else f"{base}/{path}/{name}"  # TorchServe's legacy path
        return job, requests.post(url, data=body, headers=headers, timeout=ANSWER_TIMEOUT)

    describe_url = f"{live.management.url}/models/{built_card.model_name}?customized=true"
    with ThreadPoolExecutor(16) as pool:
        cards = [pool.submit(requests.get, describe_url, timeout=ANSWER_TIMEOUT) for _ in range(6)]
        results = list(pool.map(send, jobs))
    for (i, crafted), resp in results:
        if crafted is None:
            assert resp.status_code == 200, (i, resp.text[:300])
            probs = resp.json()["predictions"][0]["probabilities"]
            assert torch.allclose(torch.tensor(list(probs.values())), expected[i % len(x)], atol=PROBABILITY_ATOL)
        else:
            *_, status, type_ = crafted
            assert (resp.status_code, resp.json()["type"]) == (status, type_), (i, resp.text[:300])
    for future in cards:
        card = future.result().json()[0]["customizedMetadata"]
        assert card["feature_names"] == list(built_card.feature_names)
    before_workers, before_5xx = untouched
    assert workers(live) == before_workers
    assert frontend_metric(live, "Requests5XX") == before_5xx

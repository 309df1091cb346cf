"""Predictions from the live TorchServe match the model in-process, under concurrency too."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from servectl.instance import readiness
from tests.conftest import ANSWER_TIMEOUT, MODEL_CONFIG, PROBABILITY_ATOL
from tests.integration.conftest import frontend_metric, workers

HEADERS = {"Content-Type": "application/json"}


def probabilities(answer: dict, class_names) -> torch.Tensor:
    return torch.tensor([[p["probabilities"][c] for c in class_names] for p in answer["predictions"]])


@pytest.fixture(scope="module")
def expected(built_model, test_split):
    with torch.inference_mode():
        return torch.softmax(built_model(test_split["x"]), 1)


def test_ping_and_readiness(live):
    assert requests.get(f"{live.inference.url}/ping", timeout=5).json() == {"status": "Healthy"}
    status = readiness.model_status(live)
    assert readiness.is_ready(status) and status["minWorkers"] == MODEL_CONFIG.min_workers


def test_served_predictions_equal_the_in_process_model(predict_url, built_card, test_split, expected):
    resp = requests.post(predict_url, json={"instances": test_split["x"].tolist()}, timeout=ANSWER_TIMEOUT)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    answer = resp.json()
    assert answer["model_name"] == built_card.model_name and answer["model_version"] == built_card.version
    got = probabilities(answer, built_card.class_names)
    assert torch.allclose(got, expected, atol=PROBABILITY_ATOL)
    assert [p["label"] for p in answer["predictions"]] == [
        built_card.class_names[i] for i in expected.argmax(1)
    ]
    assert torch.allclose(got.sum(1), torch.ones(len(got)), atol=1e-5)


def test_versioned_path_answers_with_that_version(live, built_card, test_split):
    url = f"{live.inference.url}/predictions/{built_card.model_name}/{built_card.version}"
    resp = requests.post(url, json={"instances": test_split["x"][:1].tolist()}, timeout=10)
    assert resp.status_code == 200 and resp.headers["X-Model-Version"] == built_card.version


def test_concurrent_requests_are_each_answered_correctly(live, predict_url, built_card, test_split, expected):
    """With batching on, many requests share forward passes; each must get its own rows back."""
    before = workers(live)
    rng = random.Random(0)
    jobs = []
    for _ in range(300):
        start = rng.randrange(len(test_split["x"]) - 3)
        jobs.append((start, start + rng.randint(1, 3)))

    def send(job):
        start, stop = job
        resp = requests.post(
            predict_url, json={"instances": test_split["x"][start:stop].tolist()}, timeout=ANSWER_TIMEOUT
        )
        return job, resp.status_code, resp.json()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, jobs))
    for (start, stop), status, answer in results:
        assert status == 200
        assert torch.allclose(probabilities(answer, built_card.class_names), expected[start:stop], atol=PROBABILITY_ATOL)
    assert workers(live) == before
    assert frontend_metric(live, "Requests5XX") == 0

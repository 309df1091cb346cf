"""A batch delay of 0, as the README's Performance section registers it: TorchServe 0.12 reads 0
in a .mar as its default (100 ms), so the way to a true 0 is the management API's
``max_batch_delay=0``. The same archive then answers exactly as the shipped registration."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import ANSWER_TIMEOUT, assert_same_answer

PROBE = "tabular_nowait_probe"


@pytest.fixture
def no_wait(live, built_card):
    """The built .mar registered again under another name with max_batch_delay=0, one worker;
    always unregistered."""
    management = live.management.url
    resp = requests.post(
        f"{management}/models",
        params={"url": f"{built_card.model_name}.mar", "model_name": PROBE, "max_batch_delay": 0,
                "initial_workers": 1, "synchronous": "true"},
        timeout=ANSWER_TIMEOUT + 60,
    )
    try:
        assert resp.status_code == 200, resp.text
        yield requests.get(f"{management}/models/{PROBE}", timeout=10).json()[0]
    finally:
        requests.delete(f"{management}/models/{PROBE}", timeout=ANSWER_TIMEOUT)


def test_max_batch_delay_0_through_the_management_api_is_0_and_answers_the_same(
    live, predict_url, built_card, test_split, no_wait
):
    assert no_wait["maxBatchDelay"] == 0
    assert no_wait["batchSize"] == requests.get(
        f"{live.management.url}/models/{built_card.model_name}", timeout=10
    ).json()[0]["batchSize"]
    body = {"instances": test_split["x"][:5].tolist()}
    shipped = requests.post(predict_url, json=body, timeout=ANSWER_TIMEOUT)
    probe = requests.post(f"{live.inference.url}/predictions/{PROBE}", json=body, timeout=ANSWER_TIMEOUT)
    assert shipped.status_code == probe.status_code == 200
    got, want = probe.json(), shipped.json()
    assert got.pop("model_name") == PROBE and want.pop("model_name") == built_card.model_name
    assert_same_answer(got, want)
    bad = requests.post(f"{live.inference.url}/predictions/{PROBE}", json={"instances": [[1.0]]},
                        timeout=ANSWER_TIMEOUT)
    assert bad.status_code == 400 and bad.json()["type"] == "wrong_shape"

"""Each non-default variant served from its own .mar on a live TorchServe: the same contract
(formats, every error, batching, the card, explanations where the variant has autograd) and
answers equal to the variant's in-process answers. One TorchServe at a time, each its own."""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from common.model_card import VARIANTS
from model import archive, export, variants
from model.report import REPORT_FILES
from tests.conftest import ANSWER_TIMEOUT, ARTIFACTS, PROBABILITY_ATOL
from tests.integration.conftest import frontend_metric
from tests.integration.test_contract_live import LIVE_ERRORS, post
from tests.reliability.conftest import own_server

JSON = "application/json"


@pytest.fixture(scope="module", params=[v for v in VARIANTS if v != "torchscript"])
def served(request, built_card, tmp_path_factory):
    """(variant, its card, its folder, the server's settings): the built model exported as the
    variant and archived, then served by a TorchServe of its own."""
    name = request.param
    folder = tmp_path_factory.mktemp(f"served-{name}")
    for f in ("checkpoint.pt", "test_split.pt", *REPORT_FILES):
        shutil.copy2(ARTIFACTS / f, folder / f)
    card = export.export(built_card.model_name, built_card.version, folder, name)
    mar = archive.archive(folder, folder / "store", folder / "build")
    with own_server(card.model_name, folder, model_store=mar.parent) as settings:
        yield name, card, folder, settings


def url(settings, card, kind="predictions"):
    return f"{settings.inference.url}/{kind}/{card.model_name}"


def in_process(name, card, folder, x):
    return variants.probabilities(variants.load(name, folder / card.model_file), x)


def test_answers_equal_the_in_process_answers(served, test_split):
    name, card, folder, settings = served
    x = test_split["x"][:50]
    want = in_process(name, card, folder, x)
    resp = post(url(settings, card), {"instances": x.tolist()}, JSON)
    assert resp.status_code == 200 and resp.headers["X-Model-Version"] == card.version
    got = torch.tensor([list(p["probabilities"].values()) for p in resp.json()["predictions"]])
    assert torch.allclose(got, want, atol=PROBABILITY_ATOL)  # the same 50 rows in one forward pass
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    npy = post(url(settings, card), buf.getvalue(), "application/x-npy")
    assert npy.status_code == 200 and [p["label"] for p in npy.json()["predictions"]] == [
        p["label"] for p in resp.json()["predictions"]
    ]


def test_concurrent_single_rows_are_batched_and_each_answered(served, test_split):
    name, card, folder, settings = served
    x = test_split["x"][:32]
    want = in_process(name, card, folder, x)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda row: post(url(settings, card), {"instances": [row]}, JSON), x.tolist()))
    assert [a.status_code for a in answers] == [200] * len(x)
    got = torch.tensor([list(a.json()["predictions"][0]["probabilities"].values()) for a in answers])
    assert torch.allclose(got, want, atol=max(PROBABILITY_ATOL, variants.batch_atol(name)))


@pytest.mark.parametrize(("body", "content_type", "status", "type_", "fragment"),
                         [e[1:] for e in LIVE_ERRORS], ids=[e[0] for e in LIVE_ERRORS])
def test_every_error_is_the_same_4xx(served, body, content_type, status, type_, fragment):
    _, card, _, settings = served
    resp = post(url(settings, card), body, content_type)
    assert (resp.status_code, resp.json()["type"]) == (status, type_) and fragment in resp.json()["message"]


def test_explanations_where_the_variant_has_autograd_a_clear_400_elsewhere(served, test_split):
    name, card, _, settings = served
    resp = post(url(settings, card, "explanations"), {"instances": test_split["x"][:2].tolist()}, JSON)
    if VARIANTS[name].autograd:
        assert resp.status_code == 200 and len(resp.json()["explanations"]) == 2
    else:
        assert (resp.status_code, resp.json()["type"]) == (400, "explanations_unsupported")
        assert f"the {name} variant" in resp.json()["message"]


def test_the_card_names_the_variant_and_no_request_was_a_5xx(served):
    name, card, _, settings = served
    described = requests.get(
        f"{settings.management.url}/models/{card.model_name}?customized=true", timeout=ANSWER_TIMEOUT
    ).json()[0]
    custom = described["customizedMetadata"]
    assert (custom["variant"], custom["runtime"], custom["model_file"]) == (name, VARIANTS[name].runtime, card.model_file)
    assert frontend_metric(settings, "Requests5XX") == 0

"""The request pipeline's one place (handlers.pipeline) without TorchServe: a fake context, a
real Telemetry, Observer and Explainer, and a model that can be made to fail on one row. What
is asserted here is what the pipeline alone owns: a failure stays in its request, and every
request is timed, logged and counted exactly once, on the predict and the explain path."""

from __future__ import annotations

import json

import pytest
import torch
from prometheus_client import CollectorRegistry
from ts.utils.util import PredictionException

from handlers.contract import JSON, Responder, Schema
from handlers.explain import Explainer
from handlers.observability.observer import Observer
from handlers.pipeline import Pipeline
from handlers.telemetry import Telemetry
from handlers.transports import Direct, Enveloped
from tests.conftest import HANDLER_SETTINGS
from tests.unit.test_explain import small_card, small_model

POISON = 13.0  # a row holding this value makes the model raise, as a model bug would


class Context:
    """The parts of TorchServe's Context the pipeline and its transports use."""

    def __init__(self, headers: list[dict[str, str]]) -> None:
        self.headers = headers
        self.request_ids = {i: f"ts-{i}" for i in range(len(headers))}
        self.sent: dict[int, dict[str, object]] = {i: {} for i in range(len(headers))}

    def get_request_header(self, idx: int, name: str) -> object:
        return self.headers[idx].get(name)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.headers[idx]

    def set_response_header(self, idx: int, name: str, value: str) -> None:
        self.sent[idx][name] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.sent[idx]["content_type"] = value

    def set_response_status(self, status: int, phrase: str, idx: int) -> None:
        self.sent[idx]["status"] = status


@pytest.fixture
def parts():
    card = small_card(4, 3)
    scripted = small_model(4, 3)

    def model(x: torch.Tensor) -> torch.Tensor:
        if bool((x == POISON).any()):
            raise RuntimeError("simulated model failure")
        return scripted(x)

    registry = CollectorRegistry()
    telemetry = Telemetry("m", "1", card, registry=registry, batch_size=8, max_rows=100)
    schema = Schema(card.feature_names, 100)
    responder = Responder("m", "1", card.class_names)
    explainer = Explainer(scripted, card, HANDLER_SETTINGS.explain, "m", "1", schema)
    observer = Observer(HANDLER_SETTINGS.observability, "m", "1", card.feature_names, card.class_names, lambda: None)
    batches = []
    real_batch = observer.batch

    def kept(*args):
        batches.append(real_batch(*args))
        return batches[-1]

    observer.batch = kept  # the test reads the batch's records

    def pipeline(transport=None) -> Pipeline:
        chosen = transport or Direct(schema, responder, lambda: "{}")
        return Pipeline(chosen, model, card, explainer, telemetry, observer)

    return pipeline, registry, batches, schema, responder


def frame(rows, explain: bool = False) -> tuple[dict, dict[str, str]]:
    body = json.dumps({"instances": rows}).encode()
    return {"body": body}, {"Content-Type": JSON, "explain": "True" if explain else "False"}


def run(pipeline: Pipeline, *frames):
    data, headers = [f[0] for f in frames], [f[1] for f in frames]
    context = Context(headers)
    return pipeline.run(data, context), context


def value(registry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"tabular_{name}", {"model_name": "m", "model_version": "1", **labels})


def test_a_scoring_failure_of_one_request_costs_only_that_request(parts):
    make, registry, batches, *_ = parts
    good = [[0.1, 0.2, 0.3, 0.4]]
    answers, context = run(make(), frame(good), frame([[POISON, 0, 0, 0]]), frame(good))
    assert [context.sent[i].get("status", 200) for i in range(3)] == [200, 500, 200]
    assert json.loads(answers[1])["type"] == "internal_error" and json.loads(answers[1])["request_id"] == "ts-1"
    assert json.loads(answers[0]) == json.loads(answers[2]) and "predictions" in json.loads(answers[0])
    assert value(registry, "requests_total", code="200") == 2 and value(registry, "requests_total", code="500") == 1
    assert [r.status for r in batches[0].records] == [200, 500, 200]


def test_each_request_is_timed_and_counted_once_on_both_paths(parts):
    make, registry, batches, *_ = parts
    row = [[0.1, 0.2, 0.3, 0.4]]
    answers, context = run(make(), frame(row), frame(row, explain=True), frame([[1, 2]], explain=True))
    assert "predictions" in json.loads(answers[0]) and "explanations" in json.loads(answers[1])
    assert json.loads(answers[2])["type"] == "wrong_shape"
    assert value(registry, "requests_total", code="200") == 1
    assert value(registry, "explanation_requests_total", code="200") == 1
    assert value(registry, "explanation_requests_total", code="400") == 1
    assert value(registry, "requests_total", code="400") == 0  # the bad explanation is not a prediction's
    assert value(registry, "batch_requests_count") == 1 and value(registry, "batch_requests_sum") == 3
    assert value(registry, "handler_seconds_count") == 1 and value(registry, "explanation_seconds_count") == 1
    assert value(registry, "rows_total") == 1 and value(registry, "explanation_rows_total") == 1
    (batch,) = batches
    predicted, explained, refused = batch.records
    for record in batch.records:
        assert record.started_ns <= record.decoded_ns <= record.encoded_ns
    assert predicted.scored is not None and not predicted.explained and predicted.status == 200
    assert explained.scored is not None and explained.explained and explained.status == 200
    assert refused.scored is None and (refused.status, refused.error_type) == (400, "wrong_shape")
    assert all(context.sent[i]["X-Model-Version"] == "1" for i in range(3))


def test_under_an_envelope_a_refusal_is_counted_then_raised(parts):
    make, registry, batches, schema, responder = parts
    pipeline = make(Enveloped("kserve", schema, responder, ("x0", "x1", "x2", "x3")))
    context = Context([{"explain": "False"}])
    with pytest.raises(PredictionException) as exc:
        pipeline.run([[1.0, 2.0]], context)
    assert exc.value.error_code == 400 and exc.value.message.startswith("wrong_shape: ")
    assert value(registry, "requests_total", code="400") == 1
    (outputs,) = [pipeline.run([[0.1, 0.2, 0.3, 0.4]], Context([{"explain": "False"}]))]
    assert len(outputs) == 1 and set(outputs[0]) == {"label", "class_id", "probabilities"}
    assert value(registry, "requests_total", code="200") == 1 and len(batches) == 2

"""The handler in-process, loaded the way a TorchServe worker loads it: the real .mar
layout, TorchServe's own model loader, Service, context and metrics cache, and a real
(tiny) scripted model. Responses are decoded from the worker's wire format."""

from __future__ import annotations

import gc
import io
import json
import logging
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.model_loader import TsModelLoader
from ts.service import Service

from common.model_card import METADATA_FILE, VARIANTS, ModelCard
from handlers.contract import COLUMNAR, JSON
from model import archive, variants
from tests.conftest import MODEL_CONFIG, PROBABILITY_ATOL, REPO


@dataclass
class Answer:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def decode(msg: bytes) -> tuple[int, list[Answer]]:
    """TorchServe's predict response frame (ts.protocol.otf_message_handler)."""
    pos = 0

    def read_int() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("!i", msg, pos)
        pos += 4
        return value

    def read_bytes() -> bytes:
        nonlocal pos
        n = read_int()
        out = msg[pos : pos + n]
        pos += n
        return out

    code = read_int()
    read_bytes()  # message
    answers = []
    while True:
        n = read_int()
        if n == -1:
            return code, answers
        pos += n  # request id
        content_type = read_bytes().decode()
        status = read_int()
        read_bytes()  # phrase
        headers = {read_bytes().decode(): read_bytes().decode() for _ in range(read_int())}
        answers.append(Answer(status, content_type, headers, read_bytes()))


def load_worker(
    artifacts: Path, tmp: Path, name: str, batch_size: int, config: Path | None = None, envelope: str | None = None
) -> Service:
    """A TorchServe worker's Service for a real .mar built from ``artifacts``, loaded by
    TorchServe's own loader (wrapped in ``envelope`` as TS_SERVICE_ENVELOPE would)."""
    mar = archive.archive(artifacts, tmp / "store", tmp / "build", *([config] if config else []))
    model_dir = tmp / "model"
    zipfile.ZipFile(mar).extractall(model_dir)
    sys.path.insert(0, str(model_dir))
    try:
        with pytest.MonkeyPatch.context() as patch:
            if envelope:
                patch.setenv("TS_SERVICE_ENVELOPE", envelope)  # the handler reads it in initialize
            metrics = MetricsCacheYamlImpl(config_file_path=str(REPO / "serve_config/metrics.yaml"))
            metrics.initialize_cache()
            service = TsModelLoader().load(
                name, str(model_dir), "tabular_handler.py", None, batch_size, envelope, True, metrics
            )
    finally:
        sys.path.remove(str(model_dir))
    service.set_cl_socket(None)
    return service


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request) -> str:
    """Every test of a served answer runs once per model variant (docs/model.md, "Model variants")."""
    return request.param


@pytest.fixture(scope="module")
def variant_dir(variant, variant_artifacts):
    return variant_artifacts[variant][0]


@pytest.fixture(scope="module")
def atol(variant) -> float:
    """Same rows, different batch: the last bits for the float variants, more for int8 (model.variants)."""
    return max(PROBABILITY_ATOL, variants.batch_atol(variant))


@pytest.fixture(scope="module")
def worker(variant_dir, tmp_path_factory):
    """A Service for the tiny model as one variant, from a real .mar, with max_rows lowered to 20."""
    tmp = tmp_path_factory.mktemp("worker")
    config = tmp / "model-config.yaml"
    config.write_text(MODEL_CONFIG.with_values(max_rows=20).to_yaml())
    return load_worker(variant_dir, tmp, "tiny", MODEL_CONFIG.batch_size, config)


def request(body, content_type=JSON, rid="r", accept=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    headers = [{"name": b"Content-Type", "value": content_type.encode()}]
    if accept is not None:
        headers.append({"name": b"Accept", "value": accept.encode()})
    return {
        "requestId": rid.encode(),
        "headers": headers,
        "parameters": [{"name": "body", "contentType": content_type, "value": body}],
    }


def predict(worker, *requests) -> list[Answer]:
    code, answers = decode(
        worker.predict([request(*r) if isinstance(r, tuple) else request(r) for r in requests])
    )
    assert code == 200
    return answers


@pytest.fixture(scope="module")
def card(variant_dir) -> ModelCard:
    return ModelCard.load(variant_dir / METADATA_FILE)


@pytest.fixture(scope="module")
def rows(tiny_artifacts) -> torch.Tensor:
    return torch.load(tiny_artifacts / "test_split.pt", weights_only=True)["x"][:6]


def expected_probabilities(artifacts, x):
    """The answer in-process: the card's model file loaded as the handler loads it, one batch."""
    card = ModelCard.load(artifacts / METADATA_FILE)
    return variants.probabilities(variants.load(card.variant, artifacts / card.model_file), x)


def test_batch_of_requests_each_get_their_own_answer(worker, variant_dir, card, rows, atol):
    answers = predict(worker, {"instances": rows[:2].tolist()}, {"instances": rows[2:].tolist()})
    expected = expected_probabilities(variant_dir, rows)
    got = [p for a in answers for p in a.json()["predictions"]]
    assert [a.status for a in answers] == [200, 200]
    assert all(a.content_type == JSON and a.headers["X-Model-Version"] == "0.1" for a in answers)
    assert len(got) == 6
    for p, e in zip(got, expected):
        assert list(p["probabilities"]) == list(card.class_names)
        assert torch.allclose(torch.tensor(list(p["probabilities"].values())), e, atol=atol)
        assert p["label"] == card.class_names[int(e.argmax())]
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_a_bad_request_fails_alone_in_its_batch(worker, rows, atol):
    good = {"instances": rows[:1].tolist()}
    answers = predict(
        worker, good, {"instances": [[1, 2]]}, (b"nope", "image/png"), good, {"instances": [[0] * 10] * 21}
    )
    assert [a.status for a in answers] == [200, 400, 415, 200, 413]
    first, fourth = (a.json()["predictions"][0]["probabilities"] for a in (answers[0], answers[3]))
    assert first == pytest.approx(fourth, abs=atol)  # BLAS rounding (int8: scaling) may differ by batch position
    assert answers[1].json() == {
        "code": 400,
        "type": "wrong_shape",
        "message": "instances[0]: expected 10 features, got 2",
        "request_id": "r",  # TorchServe's ID of the request: the client sent no X-Request-ID
    }
    assert answers[4].json()["type"] == "too_many_rows" and "limit is 20" in answers[4].json()["message"]
    assert all(a.content_type == JSON for a in answers)


def test_all_bad_batch_still_answers_each_request(worker):
    answers = predict(worker, b"{", {"instances": []})
    assert [(a.status, a.json()["type"]) for a in answers] == [(400, "invalid_json"), (400, "empty_input")]


def test_an_unexpected_error_fails_only_its_own_request(worker, rows, monkeypatch):
    """A handler bug on one body (simulated) must not cost the rest of the batch its answers."""
    transports = sys.modules["handlers.transports"]  # the pipeline's decode step calls it there
    real = transports.parse_request

    def fragile(body, content_type, schema, header):
        if body == b"boom":
            raise ZeroDivisionError("simulated bug")
        return real(body, content_type, schema, header)

    monkeypatch.setattr(transports, "parse_request", fragile)
    good = {"instances": rows[:1].tolist()}
    answers = predict(worker, good, b"boom", good)
    assert [a.status for a in answers] == [200, 500, 200]
    assert answers[1].json()["type"] == "internal_error"


def describe_request(rid="d"):
    """What the frontend sends for ``GET /models/<name>?customized=true``: the management
    request's headers, then ``describe: True``, and no body (ManagementRequestHandler)."""
    return {"requestId": rid.encode(), "headers": [{"name": b"Host", "value": b"127.0.0.1"},
            {"name": b"describe", "value": b"True"}], "parameters": []}


def client_describe(body, rid="c"):
    """A prediction whose client sent ``describe: True`` itself: TorchServe copies it, and adds
    the ``explain`` header every inference endpoint sets."""
    r = request(body, rid=rid)
    r["headers"] += [{"name": b"describe", "value": b"True"}, {"name": b"explain", "value": b"False"}]
    return r


def test_describe_returns_the_model_card(worker, card):
    _, answers = decode(worker.predict([describe_request()]))
    described = json.loads(answers[0].body)
    assert described["feature_names"] == list(card.feature_names)
    assert described["serving"] == {"max_rows": 20, "version": "0.1"}


def test_a_client_describe_header_neither_poisons_the_batch_nor_returns_the_card(worker, rows, atol):
    """Issue 25: the handler honoured any request 0's describe header and returned one answer for
    the batch (TorchServe then failed every request in it with 503); the frontend also batches
    its own describe requests with predictions, at any index. Each request gets its own answer."""
    good = {"instances": rows[:2].tolist()}
    alone = predict(worker, good)[0].json()["predictions"]
    legacy = {"requestId": b"l", "parameters": [], "headers": [  # an empty form post to /<name>/predict
        {"name": b"Content-Type", "value": b"application/x-www-form-urlencoded"}, {"name": b"describe", "value": b"True"}]}
    batch = [client_describe(good), request(good, rid="p"), describe_request(), client_describe(b"", rid="e"), legacy]
    code, answers = decode(worker.predict(batch))
    assert code == 200 and len(answers) == 5
    assert [a.status for a in answers] == [200, 200, 200, 400, 415]
    for answer in answers[:2]:
        got = answer.json()["predictions"]
        assert [p["label"] for p in got] == [p["label"] for p in alone]
        assert all(g["probabilities"] == pytest.approx(w["probabilities"], abs=atol) for g, w in zip(got, alone))
    assert "feature_names" in answers[2].json() and "predictions" not in answers[2].json()
    assert answers[3].json()["type"] == "invalid_json"


def test_values_far_outside_the_training_range_are_a_400_naming_their_place(worker, card, rows, atol):
    """Issue 25: [[3e38, ...]] is a finite float32, but the scaling overflows: the answer was
    200 with null probabilities (labelled as the first class), and int8's quantisation raised
    for the whole batch. Now that request is refused, naming the value's place; the others of
    the batch are answered, and values at the accepted bound still get finite answers."""
    huge = rows[:3].clone()
    huge[1, 0] = 3e38
    low, high = (torch.tensor(b * (1 - 1e-6), dtype=torch.float32) for b in worker._entry_point.__self__.schema.bounds)
    edge = torch.stack([low, high])
    good = {"instances": rows[:1].tolist()}
    answers = predict(worker, good, {"instances": huge.tolist()}, (npy_bytes(huge), "application/x-npy"), good,
                      {"instances": edge.tolist()})
    assert [a.status for a in answers] == [200, 400, 400, 200, 200]
    name = card.feature_names[0]
    for answer, place in zip(answers[1:3], ("instances[1][0]", "rows[1][0]")):
        body = answer.json()
        assert body["type"] == "out_of_range", body
        assert body["message"].startswith(f"{place} ({name}): 3e+38 is far outside the training range of {name}"), body
    assert json.loads(answers[0].body) == json.loads(answers[3].body)
    at_edge = [list(p["probabilities"].values()) for p in answers[4].json()["predictions"]]
    assert all(v is not None and np.isfinite(v) for row in at_edge for v in row), at_edge


def npy_bytes(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    return buf.getvalue()


def test_tampered_model_keeps_the_worker_from_loading(tiny_artifacts, tmp_path):
    mar = archive.archive(tiny_artifacts, tmp_path / "store", tmp_path / "build")
    model_dir = tmp_path / "model"
    zipfile.ZipFile(mar).extractall(model_dir)
    with open(model_dir / "model.pt", "ab") as fh:
        fh.write(b"tampered")
    sys.path.insert(0, str(model_dir))
    try:
        with pytest.raises(ValueError, match="sha256 .* does not match"):
            TsModelLoader().load("tiny", str(model_dir), "tabular_handler.py", None, MODEL_CONFIG.batch_size)
    finally:
        sys.path.remove(str(model_dir))


def explain_request(body):
    r = request(body)
    r["headers"].append({"name": b"explain", "value": b"True"})
    return r


def test_explanations_answer_where_the_variant_has_autograd_and_a_clear_400_elsewhere(worker, card, rows):
    """int8 and onnx have no gradients: the explanation alone is refused, naming the variant;
    a prediction in the same batch is still answered."""
    _, answers = decode(worker.predict([explain_request({"instances": rows[:1].tolist()}), request({"instances": rows[:1].tolist()})]))
    assert answers[1].status == 200
    if card.variant_info.autograd:
        assert answers[0].status == 200 and len(answers[0].json()["explanations"][0]["attributions"]) == card.n_features
    else:
        body = answers[0].json()
        assert (answers[0].status, body["type"]) == (400, "explanations_unsupported")
        assert f"the {card.variant} variant" in body["message"] and "torchscript or export" in body["message"]


def test_the_served_card_names_the_variant_and_its_runtime(worker, card, variant):
    _, answers = decode(worker.predict([describe_request()]))
    described = json.loads(answers[0].body)
    assert (described["variant"], described["runtime"]) == (variant, VARIANTS[variant].runtime)
    assert described["references"][0] == "report.md"


# ---------------------------------------------------------------- answer formats (Accept)


def _bodies(rows):
    """The same rows in every request format."""
    buf = io.BytesIO()
    np.save(buf, rows.numpy())
    csv = "\n".join(",".join(repr(v) for v in r) for r in rows.tolist()).encode()
    v2 = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.flatten().tolist()}]}
    return [({"instances": rows.tolist()}, JSON), (v2, JSON), (csv, "text/csv"), (buf.getvalue(), "application/x-npy")]


def test_every_request_format_gets_the_same_probabilities_in_every_answer_format(worker, card, rows, atol):
    want = [list(p["probabilities"].values()) for p in predict(worker, {"instances": rows.tolist()})[0].json()["predictions"]]
    for body, content_type in _bodies(rows):
        npy, columnar = predict(
            worker,
            (body, content_type, "a", "application/x-npy"),
            (body, content_type, "b", "text/html;q=0.9, application/vnd.tabular.columnar+json"),
        )
        assert (npy.status, npy.content_type) == (200, "application/x-npy"), content_type
        assert json.loads(npy.headers["X-Class-Names"]) == list(card.class_names)
        assert npy.headers["X-Model-Version"] == "0.1"
        array = np.load(io.BytesIO(npy.body), allow_pickle=False)
        assert array.dtype == np.float32 and array.shape == (len(rows), len(card.class_names))
        np.testing.assert_allclose(array, want, atol=atol)
        assert (columnar.status, columnar.content_type) == (200, COLUMNAR)
        doc = columnar.json()
        assert list(doc) == ["model_name", "model_version", "class_names", "labels", "probabilities"]
        assert doc["class_names"] == list(card.class_names)
        np.testing.assert_allclose(doc["probabilities"], want, atol=atol)
        assert doc["labels"] == [card.class_names[int(np.argmax(r))] for r in want]


def test_an_error_stays_json_whatever_accept_asks_for(worker, rows):
    good, bad_, unknown = predict(
        worker,
        ({"instances": rows[:1].tolist()}, JSON, "a", "application/x-npy"),
        ({"instances": [[1, 2]]}, JSON, "b", "application/x-npy"),
        ({"instances": rows[:1].tolist()}, JSON, "c", "text/html"),
    )
    assert good.content_type == "application/x-npy"
    assert (bad_.status, bad_.content_type, bad_.json()["type"]) == (400, JSON, "wrong_shape")
    assert unknown.status == 200 and unknown.content_type == JSON and "predictions" in unknown.json()


def test_a_refused_request_leaves_no_reference_cycle(worker):
    """A refused request's error is kept without its traceback: the traceback holds the frame
    that holds the error (with the batch and its bodies), a cycle only the cyclic collector
    frees, and workers grew under a soak's invalid requests until it ran (benchmarks/README.md)."""

    def errors() -> dict[int, object]:
        return {id(o): o for o in gc.get_objects() if type(o).__name__ == "RequestError"}

    gc.collect()
    gc.disable()
    try:
        before = errors()
        answers = predict(worker, {"instances": [[1.0]]}, ("{not json", JSON), ("a,b\n", "text/csv"))
        left = [o for i, o in errors().items() if i not in before]
    finally:
        gc.enable()
    assert [a.status for a in answers] == [400, 400, 400]
    assert left == []


def with_request_id(req: dict, value: bytes) -> dict:
    return {**req, "headers": [*req["headers"], {"name": b"X-Request-ID", "value": value}]}


def test_error_bodies_carry_the_clients_request_id_or_torchserves(worker, rows):
    """A valid X-Request-ID is the one in the body; a bad one (newline, oversized) is replaced
    by TorchServe's ID of the request, and a bad request leaves its neighbours' answers alone."""
    bad_body = {"instances": [[1, 2]]}
    batch = [
        with_request_id(request(bad_body, rid="ts-1"), b"order-1"),
        with_request_id(request(bad_body, rid="ts-2"), b"a\nforged"),
        with_request_id(request(bad_body, rid="ts-3"), b"x" * 129),
        with_request_id(request({"instances": rows[:1].tolist()}, rid="ts-4"), b"ok-4"),
    ]
    code, answers = decode(worker.predict(batch))
    assert code == 200 and [a.status for a in answers] == [400, 400, 400, 200]
    assert [a.json()["request_id"] for a in answers[:3]] == ["order-1", "ts-2", "ts-3"]


def test_torchserves_per_batch_prediction_time_line_is_dropped(worker, rows, caplog):
    """ts/service.py logs ``[METRICS]PredictionTime`` for every batch; the handler's filter on
    that logger drops it (the handler's own histogram times batches), and only it."""
    metrics_logger = logging.getLogger("ts.metrics.caching_metric")
    (dropping,) = [f for f in metrics_logger.filters if getattr(f, "prefix", "") == "[METRICS]PredictionTime"]

    def lines() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            predict(worker, {"instances": rows[:1].tolist()})
        return [r.getMessage() for r in caplog.records if r.name == metrics_logger.name]

    assert not [line for line in lines() if line.startswith("[METRICS]PredictionTime")]
    metrics_logger.removeFilter(dropping)
    try:  # without the filter TorchServe does write it: the assertion above can fail
        assert [line for line in lines() if line.startswith("[METRICS]PredictionTime")]
    finally:
        metrics_logger.addFilter(dropping)
    record = logging.LogRecord(metrics_logger.name, logging.INFO, __file__, 1, "[METRICS]Other.ms:1|#", None, None)
    assert metrics_logger.filter(record)

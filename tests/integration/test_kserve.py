"""The KServe path, run the way KServe's ``kserve-torchserve`` runtime runs it.

The storage layout from ``make kserve-layout`` (deploy/kserve/layout.py), then
``torchserve --start --model-store=<layout>/model-store --ts-config=<layout>/config/config.properties``
with ``TS_SERVICE_ENVELOPE`` set as the runtime sets it: ``kserve`` for protocol v1,
``kservev2`` for v2 (kserve/kserve: ``V1ServiceEnvelope`` / ``V2ServiceEnvelope`` in
pkg/apis/serving/v1beta1/predictor_torchserve.go; the runtime yaml passes the label as
that variable). The test changes only what a workstation needs: the ports (free loopback
ones), the model-store path (the laid-out folder), ``--foreground`` so the test owns the
process group it stops, and where TorchServe writes its logs and temp files.

TorchServe answers the envelopes on /predictions/<name>, /v1/models/<name>:predict and
/v2/models/<name>/infer alike (the envelope wraps the worker, not a route); KServe's own
wrapper calls the last two.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch

from common.model_card import ModelCard
from deploy.kserve.layout import lay_out
from handlers.explain.attribution import attribute
from servectl.config.settings import read_properties, write_properties
from servectl.instance.java import find_java, install_allowed
from servectl.instance.processes import stop_group
from servectl.waiting import wait_for
from tests.conftest import HANDLER_SETTINGS, free_ports

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class KServeTorchServe:
    """One TorchServe started from the KServe layout."""

    inference: str
    management: str
    model_name: str
    card: ModelCard

    def post(self, path: str, body: object, timeout: float = 30) -> requests.Response:
        return requests.post(f"{self.inference}{path}", json=body, timeout=timeout)


def start_from_layout(envelope: str, card: ModelCard, tmp: Path) -> Iterator[KServeTorchServe]:
    layout = lay_out(tmp / "kserve")
    config = layout / "config" / "config.properties"
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    props = read_properties(config)
    props.update(
        {
            "inference_address": f"http://127.0.0.1:{inference}",
            "management_address": f"http://127.0.0.1:{management}",
            "metrics_address": f"http://127.0.0.1:{metrics}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_inference_port": str(grpc_inference),
            "grpc_management_port": str(grpc_management),
            "model_store": str(layout / "model-store"),
        }
    )
    write_properties(config, props)
    run = tmp / "run"
    (run / "tmp").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_") and k != "OMP_NUM_THREADS"}
    env.update(
        TS_SERVICE_ENVELOPE=envelope,  # what the kserve-torchserve runtime sets
        TMPDIR=str(run / "tmp"),
        TEMP=str(run / "tmp"),
        LOG_LOCATION=str(run / "logs"),
        METRICS_LOCATION=str(run / "logs"),
    )
    java = find_java(allow_install=install_allowed())
    if java.java_home is not None:
        env["JAVA_HOME"] = str(java.java_home)
    torchserve = Path(sys.executable).with_name("torchserve")
    cmd = [str(torchserve), "--start", f"--model-store={layout / 'model-store'}", f"--ts-config={config}"]
    with open(run / "torchserve.out", "wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--foreground"], cwd=run, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = KServeTorchServe(
        f"http://127.0.0.1:{inference}", f"http://127.0.0.1:{management}", card.model_name, card
    )
    try:
        what = f"{card.model_name} READY under TS_SERVICE_ENVELOPE={envelope}"
        wait_for(lambda: ready(server, proc, run), 120, what, interval=0.25, retry_on=(requests.RequestException,))
        yield server
    finally:
        stop_group(proc.pid)


def ready(server: KServeTorchServe, proc: subprocess.Popen, run: Path) -> bool:
    """minWorkers READY in the management API (``/ping`` says Healthy while workers crash-loop)."""
    if proc.poll() is not None:
        raise RuntimeError(f"TorchServe exited during start-up with {proc.returncode}: see {run}/torchserve.out")
    resp = requests.get(f"{server.management}/models/{server.model_name}", timeout=2)
    if resp.status_code != 200:
        return False
    status = resp.json()[0]
    return sum(w["status"] == "READY" for w in status["workers"]) >= max(1, status["minWorkers"])


@pytest.fixture(scope="module")
def attributions(built_model, built_card, test_split) -> torch.Tensor:
    """The in-process explainer with the shipped settings: the attributions of the first
    10 test rows for their predicted classes from the training-mean baseline, [10, F]."""
    rows = test_split["x"][:10]
    mean = torch.tensor(built_card.normalisation["mean"], dtype=torch.float32).expand_as(rows)
    return attribute(built_model, rows, mean, torch.full((len(rows),), -1), HANDLER_SETTINGS.explain).attributions


@pytest.fixture(scope="module")
def expected(built_model, test_split) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(built_model(test_split["x"]), 1)


def v1_probabilities(answer: dict, class_names) -> torch.Tensor:
    return torch.tensor([[p["probabilities"][c] for c in class_names] for p in answer["predictions"]])


def v2_request(rows: torch.Tensor, **extra) -> dict:
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.flatten().tolist()}
    return {"inputs": [tensor], **extra}


def assert_enveloped_error(resp: requests.Response, status: int, type_: str, text: str) -> None:
    """The envelope lets the handler choose the status (PredictionException) and the message,
    not the body: TorchServe's frontend writes ``type`` as InternalServerException."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == status
    assert body["message"].startswith(f"{type_}: ") and text in body["message"], body


class TestProtocolV1:
    """TS_SERVICE_ENVELOPE=kserve: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""

    @pytest.fixture(scope="class")
    def server(self, built_card, tmp_path_factory) -> Iterator[KServeTorchServe]:
        yield from start_from_layout("kserve", built_card, tmp_path_factory.mktemp("kserve_v1"))

    def test_the_layout_serves_one_request_per_batch(self, server):
        """The envelopes answer one request per batch; the layout's snapshot says so and
        overrides the batchSize packed in the .mar."""
        status = requests.get(f"{server.management}/models/{server.model_name}", timeout=5).json()[0]
        assert status["batchSize"] == 1

    @pytest.mark.parametrize("path", ["/v1/models/{name}:predict", "/predictions/{name}"])
    def test_predictions_equal_the_in_process_model(self, server, path, test_split, expected):
        rows = test_split["x"][:50]
        resp = server.post(path.format(name=server.model_name), {"instances": rows.tolist()})
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/json")
        answer = resp.json()
        assert list(answer) == ["predictions"] and len(answer["predictions"]) == len(rows)
        names = server.card.class_names
        assert torch.allclose(v1_probabilities(answer, names), expected[:50], atol=1e-6)
        assert [p["label"] for p in answer["predictions"]] == [names[i] for i in expected[:50].argmax(1)]
        assert [p["class_id"] for p in answer["predictions"]] == expected[:50].argmax(1).tolist()

    def test_named_features_are_accepted(self, server, test_split, expected):
        names = server.card.feature_names
        instances = [dict(zip(names, row)) for row in test_split["x"][:5].tolist()]
        resp = server.post(f"/v1/models/{server.model_name}:predict", {"instances": instances})
        assert resp.status_code == 200, resp.text
        assert torch.allclose(v1_probabilities(resp.json(), server.card.class_names), expected[:5], atol=1e-6)

    @pytest.mark.parametrize(
        ("body", "status", "type_", "text"),
        [
            ({"instances": [[1.0, 2.0]]}, 400, "wrong_shape", "instances[0]: expected 10 features, got 2"),
            ({"instances": []}, 400, "empty_input", "no rows"),
            ({"instances": [[True] * 10]}, 400, "invalid_value", "instances[0][0] (f1): expected a number"),
            ({"instances": [{"nope": 1.0}]}, 400, "unknown_feature", "unknown feature 'nope'"),
            ({"inputs": []}, 400, "missing_field", "no 'instances' field"),
            # 400, not 413: TorchServe's frontend rewrites a raised 413 to 507
            ({"instances": [[0.0] * 10] * 10_001}, 400, "too_many_rows", "the limit is 10000"),
        ],
    )
    def test_bad_input_gets_its_4xx(self, server, body, status, type_, text):
        resp = server.post(f"/v1/models/{server.model_name}:predict", body)
        assert_enveloped_error(resp, status, type_, text)

    def test_bodies_the_envelope_cannot_decode_get_its_503(self, server):
        """Pinned, not wanted: TorchServe's kserve envelope json-decodes the body and reads
        ``instances`` before the handler runs, so a body that is not a JSON object fails
        there with 503 "Prediction failed" (no handler code is involved)."""
        url = f"{server.inference}/v1/models/{server.model_name}:predict"
        for body in (b"not json", b"[1, 2]"):
            resp = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert resp.status_code == 503 and resp.json()["message"] == "Prediction failed"

    def test_concurrent_requests_each_get_their_own_answer(self, server, test_split, expected):
        """The envelope answers only the first request of a batch, so the layout serves one
        request per batch: under concurrency every request, good or bad, gets its own answer."""
        names = server.card.class_names

        def body(rows: list[list[float]]) -> dict:
            return {"instances": rows}

        def probabilities(answer: dict) -> torch.Tensor:
            return v1_probabilities(answer, names)

        check_concurrent(server, f"/v1/models/{server.model_name}:predict", body, probabilities, test_split, expected)


    def test_explain_path_gives_the_attributions_of_the_explanations_endpoint(self, server, test_split, attributions):
        """KServe's v1 explain path: ``{"explanations": [...]}``, one object per row as
        /explanations gives it, with the same attributions as the in-process explainer."""
        rows = test_split["x"][:10]
        resp = server.post(f"/v1/models/{server.model_name}:explain", {"instances": rows.tolist()})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert list(answer) == ["explanations"] and len(answer["explanations"]) == len(rows)
        names = server.card.feature_names
        got = torch.tensor([[e["attributions"][n] for n in names] for e in answer["explanations"]])
        assert torch.allclose(got, attributions, atol=1e-5)
        for e in answer["explanations"]:
            assert abs(sum(e["attributions"].values()) - (e["output_at_row"] - e["output_at_baseline"])) <= 1.1e-3

    def test_explain_target_comes_from_the_header_and_a_bad_one_is_a_400(self, server, test_split):
        url = f"{server.inference}/v1/models/{server.model_name}:explain"
        body = {"instances": test_split["x"][:2].tolist()}
        names = server.card.class_names
        resp = requests.post(url, json=body, headers={"X-Explain-Target": names[0]}, timeout=30)
        assert resp.status_code == 200 and {e["target"] for e in resp.json()["explanations"]} == {names[0]}
        resp = requests.post(url, json=body, headers={"X-Explain-Target": "no-such-class"}, timeout=30)
        assert_enveloped_error(resp, 400, "invalid_target", "no-such-class")


class TestProtocolV2:
    """TS_SERVICE_ENVELOPE=kservev2: Open Inference Protocol in and out."""

    @pytest.fixture(scope="class")
    def server(self, built_card, tmp_path_factory) -> Iterator[KServeTorchServe]:
        yield from start_from_layout("kservev2", built_card, tmp_path_factory.mktemp("kserve_v2"))

    @pytest.mark.parametrize("path", ["/v2/models/{name}/infer", "/predictions/{name}"])
    def test_outputs_equal_the_in_process_model(self, server, path, test_split, expected):
        rows = test_split["x"][:50]
        resp = server.post(path.format(name=server.model_name), v2_request(rows, id="req-1"))
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["id"] == "req-1"
        assert answer["model_name"] == server.model_name and answer["model_version"] == server.card.version
        n_classes = len(server.card.class_names)
        (output,) = answer["outputs"]
        # the envelope names the output after the input and flattens it to one dimension
        assert output["name"] == "x" and output["datatype"] == "FP32" and output["shape"] == [len(rows) * n_classes]
        got = torch.tensor(output["data"]).reshape(len(rows), n_classes)
        assert torch.allclose(got, expected[:50], atol=1e-6)
        assert got.argmax(1).tolist() == expected[:50].argmax(1).tolist()

    def test_explain_path_gives_the_attributions_as_one_fp32_output(self, server, test_split, attributions):
        """KServe's v2 explain path: the attributions [rows, features] in feature order, as
        one FP32 output that the envelope flattens (as it does the probabilities)."""
        rows = test_split["x"][:10]
        resp = server.post(f"/v2/models/{server.model_name}/explain", v2_request(rows, id="why-1"))
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["id"] == "why-1"
        (output,) = answer["outputs"]
        n_features = len(server.card.feature_names)
        assert output["datatype"] == "FP32" and output["shape"] == [len(rows) * n_features]
        assert torch.allclose(torch.tensor(output["data"]).reshape(len(rows), n_features), attributions, atol=1e-5)

    def test_without_an_id_the_answer_carries_torchserves_request_id(self, server, test_split):
        """After a refused request that had an id, the next one without an id must not be
        answered with the refused one's (the envelope keeps it on the worker's context)."""
        url = f"/v2/models/{server.model_name}/infer"
        refused = server.post(url, v2_request(torch.ones(1, 2), id="stale"))
        assert refused.status_code == 400
        for _ in range(4):  # every worker sees one
            resp = server.post(url, v2_request(test_split["x"][:1]))
            assert resp.status_code == 200 and resp.json()["id"] not in ("", "stale")
            assert resp.json()["id"] == resp.headers["x-request-id"]

    @pytest.mark.parametrize(
        ("tensor", "status", "type_", "text"),
        [
            ({"shape": [1, 2], "data": [1.0, 2.0]}, 400, "wrong_shape", "expected 10 features, got 2"),
            ({"shape": [10], "data": [1.0] * 10}, 400, "wrong_shape", "expected [rows, 10], got [10]"),
            ({"datatype": "BYTES", "data": ["a"]}, 400, "invalid_request", "'BYTES' is not a numeric type"),
            ({"data": [1.0] * 9 + [1e39]}, 400, "invalid_value", "inputs[0].data[9] (row 0, f10): 1e+39 is outside"),
            ({"shape": [10_001, 10], "data": [0.0] * 100_010}, 400, "too_many_rows", "the limit is 10000"),
        ],
    )
    def test_bad_input_gets_its_4xx(self, server, tensor, status, type_, text):
        base = {"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0.5] * 10}
        resp = server.post(f"/v2/models/{server.model_name}/infer", {"inputs": [{**base, **tensor}]})
        assert_enveloped_error(resp, status, type_, text)

    def test_no_input_tensor_gets_a_400(self, server):
        resp = server.post(f"/v2/models/{server.model_name}/infer", {"inputs": []})
        assert_enveloped_error(resp, 400, "invalid_request", "non-empty array of input tensors")

    def test_bodies_the_envelope_cannot_decode_get_its_503(self, server):
        """Pinned, not wanted: the kservev2 envelope json-decodes the body, reads ``inputs``
        and reshapes each tensor's data with numpy before the handler runs; a body that fails
        there (not JSON, no ``inputs``, data that does not fit its shape) gets 503."""
        url = f"{server.inference}/v2/models/{server.model_name}/infer"
        bodies = [
            b"not json",
            b'{"instances": [[1]]}',
            b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [1, 2, 3]}]}',
        ]
        for body in bodies:
            resp = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert resp.status_code == 503 and resp.json()["message"] == "Prediction failed"

    def test_concurrent_requests_each_get_their_own_answer(self, server, test_split, expected):
        n_classes = len(server.card.class_names)

        def body(rows: list[list[float]]) -> dict:
            tensor = {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": sum(rows, [])}
            return {"inputs": [tensor]}

        def probabilities(answer: dict) -> torch.Tensor:
            return torch.tensor(answer["outputs"][0]["data"]).reshape(-1, n_classes)

        check_concurrent(server, f"/v2/models/{server.model_name}/infer", body, probabilities, test_split, expected)


def check_concurrent(server, path, body, probabilities, test_split, expected) -> None:
    """120 requests of 1 to 3 test-split rows from 8 threads; every fifth has 9-feature rows
    and must get its 400 while the others get exactly their own rows' probabilities."""
    rng = random.Random(0)
    jobs = []
    for i in range(120):
        lo = rng.randrange(len(test_split["x"]) - 3)
        hi = lo + rng.randint(1, 3)
        rows = test_split["x"][lo:hi].tolist()
        good = i % 5 != 4
        jobs.append((lo, hi, good, body(rows if good else [row[:9] for row in rows])))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: server.post(path, job[3]), jobs))
    for (lo, hi, good, _), resp in zip(jobs, answers):
        if good:
            assert resp.status_code == 200, resp.text
            assert torch.allclose(probabilities(resp.json()), expected[lo:hi], atol=1e-6)
        else:
            assert_enveloped_error(resp, 400, "wrong_shape", "got 9")

"""Explanations through a live TorchServe: completeness on every test-split row, the same
attributions in every request format, a mixed concurrent load of predictions, explanations
and bad requests each answered with its own shape and status, the metrics kept apart, the
client and its command line, and the documented examples."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from client import Client, ClientConfig
from handlers.explain.attribution import attribute
from tests.conftest import HANDLER_SETTINGS, REPO
from tests.integration.conftest import frontend_metric, workers
from tests.unit.test_docs import runnable_examples

TOLERANCE = 1e-3  # handler.explain.tolerance in serve_config/model-config.yaml
BATCH_ATOL = 1e-5  # the same row in another batch: float32 BLAS may change the last bits
# The documented examples (docs/explanations.md); these stand in only if no page has any.
EXAMPLES = [
    "curl -s http://127.0.0.1:8080/explanations/tabular_classifier -H 'Content-Type: application/json' "
    "-d '{\"instances\": [[-50, -39, -28, -18, -2, 11, -24, -38, 200, 2894]]}'  # -> 200",
    "printf 'f1,f2,f3,f4,f5,f6,f7,f8,f9,f10\\n-50,-39,-28,-18,-2,11,-24,-38,200,2894\\n' | curl -s "
    "http://127.0.0.1:8080/explanations/tabular_classifier -H 'Content-Type: text/csv' "
    "-H 'X-Explain-Target: beta' --data-binary @-  # -> 200",
]


@pytest.fixture(scope="module")
def explain_url(live, built_card) -> str:
    return f"{live.inference.url}/explanations/{built_card.model_name}"


@pytest.fixture(scope="module")
def reference(built_model, built_card):
    """The in-process explainer with the shipped settings: what the server must answer."""

    mean = torch.tensor(built_card.normalisation["mean"], dtype=torch.float32)

    def explain(x: torch.Tensor, target: int = -1):
        return attribute(built_model, x, mean.expand_as(x), torch.full((len(x),), target), HANDLER_SETTINGS.explain)

    return explain


def attributions(body: dict) -> torch.Tensor:
    return torch.tensor([list(e["attributions"].values()) for e in body["explanations"]])


def post(url: str, body, content_type: str = "application/json", **headers: str) -> requests.Response:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return requests.post(url, data=data, headers={"Content-Type": content_type, **headers}, timeout=60)


def npy(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    return buf.getvalue()


def test_completeness_on_every_test_row_through_the_server(explain_url, built_card, test_split, reference):
    x = test_split["x"]
    answers = [post(explain_url, {"instances": part.tolist()}) for part in x.split(100)]
    assert [a.status_code for a in answers] == [200, 200]
    rows = [e for a in answers for e in a.json()["explanations"]]
    assert len(rows) == len(x)
    for e in rows:
        assert list(e["attributions"]) == list(built_card.feature_names)
        gap = abs(sum(e["attributions"].values()) - (e["output_at_row"] - e["output_at_baseline"]))
        assert gap == pytest.approx(e["approximation_error"], abs=1e-6)
        assert e["approximation_error"] <= TOLERANCE
        assert e["baseline"] == pytest.approx(dict(zip(built_card.feature_names, built_card.normalisation["mean"])))
    expected = reference(x)
    got = torch.cat([attributions(a.json()) for a in answers])
    assert torch.allclose(got, expected.attributions, atol=BATCH_ATOL)
    assert [e["target_id"] for e in rows] == expected.targets.tolist()


def test_every_format_gives_the_same_explanations(live, explain_url, built_card, test_split, reference):
    x = test_split["x"][:5]
    names = built_card.feature_names
    first = built_card.class_names[0]  # explained by name, by id 0 and by the header alike
    csv = (",".join(names) + "\n" + "\n".join(",".join(repr(v) for v in r) for r in x.tolist())).encode()
    v2 = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}
    answers = [
        post(explain_url, {"instances": x.tolist(), "target": first}),
        post(explain_url, {"instances": [dict(zip(names, r)) for r in x.tolist()]}, **{"X-Explain-Target": first}),
        post(explain_url, {**v2, "parameters": {"target": first}}),
        post(explain_url, csv, "text/csv", **{"X-Explain-Target": first}),
        post(explain_url, npy(x), "application/x-npy", **{"X-Explain-Target": "0"}),
        post(f"{explain_url}/{built_card.version}", {"instances": x.tolist(), "target": 0}),
    ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    expected = reference(x, target=0).attributions
    for a in answers:
        assert a.headers["Content-Type"].startswith("application/json")
        assert [e["target"] for e in a.json()["explanations"]] == [first] * 5
        assert torch.allclose(attributions(a.json()), expected, atol=BATCH_ATOL)


def test_a_mixed_concurrent_load_gets_each_request_its_own_answer(
    live, explain_url, predict_url, built_model, test_split, reference
):
    """Predictions, explanations and bad requests of both kinds at once: TorchServe batches
    them together (batchSize 64), and each must come back with its own shape and status."""
    x = test_split["x"]
    with torch.no_grad():
        probabilities = torch.softmax(built_model(x), 1)
    explained = reference(x)
    before, errors_before = workers(live), frontend_metric(live, "Requests5XX")

    def job(i: int):
        lo, hi = i % 140, i % 140 + 1 + i % 7
        rows = x[lo:hi].tolist()
        kind = i % 6
        if kind == 0:
            return "prediction", lo, hi, post(predict_url, {"instances": rows})
        if kind == 1:
            return "explanation", lo, hi, post(explain_url, {"instances": rows})
        if kind == 2:
            csv = "\n".join(",".join(map(repr, r)) for r in rows).encode()
            return "explanation", lo, hi, post(explain_url, csv, "text/csv")
        if kind == 3:
            return "bad prediction", 0, 0, post(predict_url, {"instances": [[1, 2, 3]]})
        if kind == 4:
            return "bad target", 0, 0, post(explain_url, {"instances": rows, "target": "zeta"})
        return "too many rows", 0, 0, post(explain_url, {"instances": [[0.0] * 10] * 101})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(120)))
    for kind, lo, hi, resp in results:
        body = resp.json()
        if kind == "prediction":
            assert resp.status_code == 200 and list(body) == ["model_name", "model_version", "predictions"]
            got = torch.tensor([list(p["probabilities"].values()) for p in body["predictions"]])
            assert torch.allclose(got, probabilities[lo:hi], atol=BATCH_ATOL)
        elif kind == "explanation":
            assert resp.status_code == 200 and "explanations" in body and "predictions" not in body
            assert torch.allclose(attributions(body), explained.attributions[lo:hi], atol=BATCH_ATOL)
        elif kind == "bad prediction":
            assert (resp.status_code, body["type"]) == (400, "wrong_shape")
        elif kind == "bad target":
            assert (resp.status_code, body["type"]) == (400, "invalid_target")
        else:
            assert (resp.status_code, body["type"]) == (413, "too_many_rows")
    assert workers(live) == before  # no worker died or restarted
    assert frontend_metric(live, "Requests5XX") == errors_before


def model_metric(live, name: str, **labels: str) -> float:
    """One sample of the model-metrics exporter (0 when absent)."""
    text = requests.get(f"{live.model_metrics.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}{{([^}}]*)}} ([0-9.eE+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_explanations_are_counted_apart_from_predictions(live, explain_url, test_split):
    names = ("tabular_explanation_requests_total", "tabular_requests_total")
    before = {(n, c): model_metric(live, n, code=c) for n in names for c in ("200", "400")}
    rows_before = model_metric(live, "tabular_explanation_rows_total")
    seconds_before = model_metric(live, "tabular_explanation_seconds_count")
    assert post(explain_url, {"instances": test_split["x"][:3].tolist()}).status_code == 200
    assert post(explain_url, {"instances": test_split["x"][:3].tolist(), "target": 9}).status_code == 400
    after = {(n, c): model_metric(live, n, code=c) for n in names for c in ("200", "400")}
    assert after[names[0], "200"] - before[names[0], "200"] == 1
    assert after[names[0], "400"] - before[names[0], "400"] == 1
    assert after[names[1], "200"] == before[names[1], "200"] and after[names[1], "400"] == before[names[1], "400"]
    assert model_metric(live, "tabular_explanation_rows_total") - rows_before == 3
    assert model_metric(live, "tabular_explanation_seconds_count") - seconds_before == 2


def test_the_client_explains_and_prints_a_ranked_table(live, built_card, test_split, tmp_path):
    client = Client(ClientConfig(inference_url=live.inference.url, management_url=live.management.url))
    rows = test_split["x"][:2].tolist()
    target = built_card.class_names[1]
    result = client.explain(rows, target=target)
    assert [r.target for r in result.rows] == [target, target] and result.method == "integrated_gradients"
    ranked = result.rows[0].ranked()
    assert [abs(v) for _, v in ranked] == sorted((abs(v) for v in result.rows[0].attributions.values()), reverse=True)
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join(",".join(map(repr, r)) for r in rows))
    for from_csv, from_json in zip(client.explain_csv(csv, target=target).rows, result.rows):
        assert from_csv.attributions == pytest.approx(from_json.attributions, abs=BATCH_ATOL)
    out = subprocess.run(
        [sys.executable, "-m", "client", "explain", "--url", live.inference.url, "--top", "3"],
        input=json.dumps(rows), capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("row 0:"))
    top = [line.split()[0] for line in lines[first + 2 : first + 5]]
    assert top == [name for name, _ in client.explain(rows[:1]).rows[0].ranked()[:3]]
    assert "error" in lines[first + 5] and "steps" in lines[first + 5]
    bad = subprocess.run(
        [sys.executable, "-m", "client", "explain", "--url", live.inference.url, "--target", "zeta"],
        input=json.dumps(rows), capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "400 invalid_target" in bad.stderr


def readme_examples() -> list[str]:
    """The explanation examples of README.md and docs/*.md (docs/explanations.md holds them)."""
    lines = [line for _, line in runnable_examples() if "/explanations/" in line]
    return lines or EXAMPLES


@pytest.mark.parametrize("line", readme_examples())
def test_readme_example(live, line):
    command, expected = line.rsplit("# -> ", 1)
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{live.inference.port}").strip()
    out = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    body, status = out.stdout.rsplit("\n", 1)
    assert status == expected.strip(), out.stderr
    for e in json.loads(body)["explanations"]:
        gap = abs(sum(e["attributions"].values()) - (e["output_at_row"] - e["output_at_baseline"]))
        assert gap == pytest.approx(e["approximation_error"], abs=1e-6) and gap <= TOLERANCE

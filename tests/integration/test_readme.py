"""The examples of README.md and docs/*.md, run as written against the live server: every
``# -> <status>`` line, every error table row, every marked answer (tests/unit/test_docs.py
collects them and says how a page marks them)."""

from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest
import requests

from tests.conftest import ANSWER_TIMEOUT, REPO, SHIPPED
from tests.unit.test_docs import answer_blocks, error_rows, runnable_examples

COMMANDS = runnable_examples()
ERROR_ROWS = error_rows()
ANSWERS = answer_blocks()


def test_the_readme_has_examples():
    assert len(COMMANDS) >= 6 and len(ERROR_ROWS) >= 14


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(COMMANDS)])
def test_readme_command(live, page, line):
    command, expected = line.rsplit("# -> ", 1)
    for api in ("inference", "management"):  # the pages' addresses are the shipped config's
        shipped, ours = getattr(SHIPPED, api), getattr(live, api)
        command = command.replace(f"{shipped.host}:{shipped.port}", f"{ours.host}:{ours.port}")
    out = subprocess.run(["bash", "-c", command.strip() + " -o /dev/null -w '%{http_code}'"], cwd=REPO,
                         capture_output=True, text=True, timeout=ANSWER_TIMEOUT)
    assert out.stdout == expected.strip(), f"{page}: {line}\n{out.stderr}"


@pytest.mark.parametrize(("page", "row"), ERROR_ROWS, ids=[row[0] for _, row in ERROR_ROWS])
def test_readme_error_table(live, predict_url, page, row):
    type_, status, content_type, body, message = row
    resp = requests.post(predict_url, data=body.encode(), headers={"Content-Type": content_type}, timeout=ANSWER_TIMEOUT)
    body = resp.json()
    assert body.pop("request_id") == resp.headers["X-Request-ID"]  # TorchServe's ID: the client sent none
    assert body == {"code": int(status), "type": type_, "message": message.replace("\\\\", "\\")}


README_ROW = [-50, -39, -28, -18, -2, 11, -24, -38, 200, 2894]  # the row of the pages' curl examples


def close(shown: object, real: object, where: str = "") -> None:
    """Every number a page shows equals the live one to the digits it shows."""
    if isinstance(shown, dict):
        for key, value in shown.items():
            close(value, real[key], f"{where}.{key}")  # type: ignore[index]
    elif isinstance(shown, list):
        for i, value in enumerate(shown):
            close(value, real[i], f"{where}[{i}]")  # type: ignore[index]
    elif isinstance(shown, float):
        tolerance = 0.5 * 10 ** Decimal(repr(shown)).as_tuple().exponent  # half a unit of the last digit shown
        assert abs(shown - real) <= tolerance, f"{where}: shows {shown}, the server answers {real}"  # type: ignore[operator]
    else:
        assert shown == real, f"{where}: shows {shown!r}, the server answers {real!r}"


def test_the_readme_answers_are_the_servers(live, predict_url, built_card):
    """The example answers the pages show are today's model's, not a stale model's."""
    first_request = (REPO / "artifacts" / "example-request.json").read_bytes()
    example = requests.post(predict_url, data=first_request, headers={"Content-Type": "application/json"}, timeout=30).json()
    one_row = requests.post(predict_url, json={"instances": [README_ROW]}, timeout=30).json()
    explain_url = predict_url.replace("/predictions/", "/explanations/")
    explained = requests.post(explain_url, json={"instances": [README_ROW]}, timeout=30).json()
    live_answers = {  # name in <!-- answer: NAME --> -> (the live answer, the part compared)
        "example-request": (example, "predictions"),
        "one-row": (one_row, "predictions"),
        "explain-one-row": (explained, "explanations"),
    }
    assert set(ANSWERS) == set(live_answers)
    for name, (page, shown) in ANSWERS.items():
        real, key = live_answers[name]
        close(shown[key][0], real[key][0], f"{page} ({name})")

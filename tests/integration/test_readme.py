"""The README's API examples, run as written against the live server."""

from __future__ import annotations

import re
import subprocess
from decimal import Decimal

import pytest
import requests

from tests.conftest import ANSWER_TIMEOUT, REPO, SHIPPED

README = (REPO / "README.md").read_text()
API = README[README.index("## The prediction API") : README.index("\n## ", README.index("## The prediction API") + 5)]
COMMANDS = [line for line in API.splitlines() if re.search(r"curl -s .*# -> \d{3}$", line)]
ERROR_ROWS = [
    row for row in (line.split(" | ") for line in API.splitlines() if line.startswith("| `"))
    if len(row) == 5 and row[3].startswith("`")
]


def test_the_readme_has_examples():
    assert len(COMMANDS) >= 6 and len(ERROR_ROWS) >= 14


@pytest.mark.parametrize("line", COMMANDS, ids=range(len(COMMANDS)))
def test_readme_command(live, line):
    command, expected = line.rsplit("# -> ", 1)
    for api in ("inference", "management"):  # the README's addresses are the shipped config's
        shipped, ours = getattr(SHIPPED, api), getattr(live, api)
        command = command.replace(f"{shipped.host}:{shipped.port}", f"{ours.host}:{ours.port}")
    out = subprocess.run(["bash", "-c", command.strip() + " -o /dev/null -w '%{http_code}'"], cwd=REPO,
                         capture_output=True, text=True, timeout=ANSWER_TIMEOUT)
    assert out.stdout == expected.strip(), out.stderr


@pytest.mark.parametrize("row", ERROR_ROWS, ids=[r[0].strip("| `") for r in ERROR_ROWS])
def test_readme_error_table(live, predict_url, row):
    type_, status, content_type, body, message = (cell.strip().strip("|").strip().strip("`") for cell in row)
    resp = requests.post(predict_url, data=body.encode(), headers={"Content-Type": content_type}, timeout=ANSWER_TIMEOUT)
    body = resp.json()
    assert body.pop("request_id") == resp.headers["X-Request-ID"]  # TorchServe's ID: the client sent none
    assert body == {"code": int(status), "type": type_, "message": message.replace("\\\\", "\\")}


README_ROW = [-50, -39, -28, -18, -2, 11, -24, -38, 200, 2894]  # the row of the README's curl examples


def rounded_json_blocks(section: str) -> list[dict]:
    """The ```json blocks of a README section (``...`` elisions removed)."""
    import json

    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    return [json.loads(re.sub(r",\s*\.\.\.", "", block)) for block in blocks]


def close(shown: object, real: object, where: str = "") -> None:
    """Every number the README shows equals the live one to the digits it shows."""
    if isinstance(shown, dict):
        for key, value in shown.items():
            close(value, real[key], f"{where}.{key}")  # type: ignore[index]
    elif isinstance(shown, list):
        for i, value in enumerate(shown):
            close(value, real[i], f"{where}[{i}]")  # type: ignore[index]
    elif isinstance(shown, float):
        tolerance = 0.5 * 10 ** Decimal(repr(shown)).as_tuple().exponent  # half a unit of the last digit shown
        assert abs(shown - real) <= tolerance, f"README{where}: shows {shown}, the server answers {real}"  # type: ignore[operator]
    else:
        assert shown == real, f"README{where}: shows {shown!r}, the server answers {real!r}"


def test_the_readme_answers_are_the_servers(live, predict_url, built_card):
    """The example answers in the README are today's model's, not a stale model's."""
    first_request = (REPO / "artifacts" / "example-request.json").read_bytes()
    example = requests.post(predict_url, data=first_request, headers={"Content-Type": "application/json"}, timeout=30).json()
    one_row = requests.post(predict_url, json={"instances": [README_ROW]}, timeout=30).json()
    explain_url = predict_url.replace("/predictions/", "/explanations/")
    explained = requests.post(explain_url, json={"instances": [README_ROW]}, timeout=30).json()
    first_screen, api = README[: README.index("## The prediction API")], API
    (shown_first,) = rounded_json_blocks(first_screen)
    close(shown_first["predictions"][0], example["predictions"][0], ".first-screen")
    shown_response, shown_explanation = rounded_json_blocks(api)
    close(shown_response["predictions"][0], one_row["predictions"][0], ".response")
    close(shown_explanation["explanations"][0], explained["explanations"][0], ".explanation")

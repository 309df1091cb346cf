"""The README's API examples, run as written against the live server."""

from __future__ import annotations

import re
import subprocess

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
    assert resp.json() == {"code": int(status), "type": type_, "message": message.replace("\\\\", "\\")}

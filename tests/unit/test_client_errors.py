"""client.api.error_from: a failed answer becomes a PredictionError that names the request ID
(the body's request_id, else the X-Request-ID header TorchServe and nginx put on every answer)."""

from __future__ import annotations

import json

import pytest
import requests

from client.api import error_from


def answer(status: int, body: bytes, headers: dict[str, str]) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content, resp.reason = status, body, "Bad"
    resp.headers.update(headers)
    return resp


@pytest.mark.parametrize(("body", "headers", "rid"), [
    ({"code": 400, "type": "wrong_shape", "message": "m", "request_id": "cust-1"}, {"X-Request-ID": "uuid"}, "cust-1"),
    ({"code": 503, "type": "ServiceUnavailableException", "message": "no worker"}, {"X-Request-ID": "uuid"}, "uuid"),
    ({"code": 400, "type": "t", "message": "m"}, {}, None),
])
def test_the_error_names_the_request_id(body, headers, rid):
    err = error_from(answer(body["code"], json.dumps(body).encode(), headers))
    assert err.request_id == rid and (f"(request ID {rid})" in str(err)) == (rid is not None)


def test_a_non_json_error_names_the_header_id():
    err = error_from(answer(502, b"<html>bad gateway</html>", {"X-Request-ID": "abc"}))
    assert err.type == "http_error" and err.request_id == "abc" and str(err).endswith("(request ID abc)")

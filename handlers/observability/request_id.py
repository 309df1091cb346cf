"""The request ID of one request: the client's ``X-Request-ID`` when it is safe to repeat, else
one made here. Safe means short and from a small alphabet, so a client cannot put a newline, a
control character or a megabyte into a log line, a header or a trace. nginx's template checks the
same pattern (docker/nginx/templates/default.conf.template), so an ID it passes on is kept.

TorchServe 0.12's frontend sets the answer's ``x-request-id`` itself, to its own UUID of the
request (NettyUtils.sendHttpResponse, after the handler's headers): a handler cannot echo the
client's ID there. nginx (the stack's entry point, the canary proxy) replaces that header with
the ID it sent on; straight to TorchServe, the header is the UUID, and the handler's access
line names both."""

from __future__ import annotations

import re
import uuid

HEADER = "X-Request-ID"
MAX_LENGTH = 128
PATTERN = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}", re.ASCII)


def is_valid(value: object) -> bool:
    """Whether ``value`` may be echoed as it is (a str matching ``PATTERN`` in full)."""
    return isinstance(value, str) and PATTERN.fullmatch(value) is not None


def request_id(client_value: object, fallback: object = None) -> str:
    """The client's ID if valid; else ``fallback`` (TorchServe's own ID of the request) if
    valid; else a new UUID. A replaced client ID is never returned or logged raw."""
    if client_value is not None and is_valid(client_value):  # most requests send none
        return str(client_value)
    if is_valid(fallback):
        return str(fallback)
    return uuid.uuid4().hex

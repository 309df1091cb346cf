"""TorchServe's own describe request, told apart from a client's ``describe`` header.

``GET /models/<name>?customized=true`` on the management API makes the frontend queue a request
with the management request's headers, then ``describe: True``, and no body. It joins the
model's batch queue like a prediction, so it may sit at any index of a batch of predictions
(BaseHandler honours request 0's header only, and answers the whole batch with the card).

Kept apart from the handler module: TorchServe's loader wants exactly one class there.
"""

from __future__ import annotations

from typing import Any


class Described:
    """The place in a batch of TorchServe's own describe request (one value: DESCRIBED)."""


DESCRIBED = Described()


def is_describe(context: Any, idx: int, request: dict[str, Any]) -> bool:
    """True for the request TorchServe sends for ``GET /models/<name>?customized=true``: the
    management request's headers, then ``describe: True``, and no body at all. It joins the
    batch queue like a prediction, at any index, so it is answered in its place.

    TorchServe copies a client's headers into every inference request, ``describe`` too. Such
    a request carries a body (a raw body always arrives as parameter "body") and, on the
    /predictions, /explanations and KServe paths, the ``explain`` header those endpoints add:
    it is a prediction like any other (issue 25: it made one answer for the whole batch, and
    TorchServe failed every request in it with 503). Left: /invocations and the legacy
    /<name>/predict path add no ``explain``, so an empty form post there with the header gets
    the card, as its one answer (the proxy strips the header and allows neither path).
    """
    return (
        not request
        and context.get_request_header(idx, "describe") == "True"
        and context.get_request_header(idx, "explain") is None
    )

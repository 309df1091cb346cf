"""TorchServe's own describe request, told apart from a client's ``describe`` header.

``GET /models/<name>?customized=true`` on the management API makes the frontend queue a request
with the management request's headers, then ``describe: True``, and no body. It joins the
model's batch queue like a prediction, so it may sit at any index of a batch of predictions
(BaseHandler honours request 0's header only, and answers the whole batch with the card).

Kept apart from the handler module: TorchServe's loader wants exactly one class there.
"""

from __future__ import annotations

from typing import Any

# the content types whose empty body TorchServe's frontend turns into no parameter at all
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


class Described:
    """The place in a batch of TorchServe's own describe request (one value: DESCRIBED)."""


DESCRIBED = Described()


def is_describe(context: Any, idx: int, request: dict[str, Any]) -> bool:
    """True for the request TorchServe sends for ``GET /models/<name>?customized=true``: the
    management request's headers, then ``describe: True``, and no body at all. It joins the
    batch queue like a prediction, at any index, so it is answered in its place.

    TorchServe copies a client's headers into every inference request, ``describe`` too. Such
    a request carries a parameter unless its body went through the frontend's form decoder
    (a raw body always arrives as parameter "body"), and a form needs a form content type;
    the /predictions, /explanations and KServe paths also add the ``explain`` header. So a
    request with either is a prediction like any other (issue 25: one answer for the whole
    batch, which TorchServe failed with 503 for every request in it; alone, the model card on
    the inference port, which an empty form post to the legacy /<name>/predict path still got).
    """
    if request or context.get_request_header(idx, "describe") != "True":
        return False
    headers = {str(k).lower(): v for k, v in (context.get_all_request_header(idx) or {}).items()}
    content_type = str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    return "explain" not in headers and content_type not in FORM_TYPES

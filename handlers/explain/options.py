"""An explanation request's own options, read from what the pipeline already decoded.

``POST /explanations/<name>`` reaches the handler with the request header ``explain: True``
(TorchServe's frontend sets it per request; BaseHandler reads only request 0's, so the pipeline
reads it per request index). The rows are parsed by the same contract as a prediction's; this
module adds the options (the target class, the baseline) from the headers ``X-Explain-Target``
and ``X-Explain-Baseline`` (any format) or, in a JSON body, from the fields ``target`` and
``baseline`` (v2 bodies may put them in ``parameters``), taken from the document the contract
decoded (``Parsed.doc``): the body is parsed once. One option given in both places is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

from common.model_card import ModelCard
from handlers.contract import FLOAT32_MAX, Parsed, RequestError, Schema
from handlers.contract.validation import _checked
from handlers.settings import ExplainSettings

HEADER = "explain"
# options for any body format (TorchServe 0.12 forwards no query string to the handler)
OPTION_HEADERS = {"target": "x-explain-target", "baseline": "x-explain-baseline"}
CLASS_ID = re.compile(r"-?[0-9]+")  # ASCII digits only: "²".isdigit() is True, int("²") raises
NO_DOC: Mapping[str, Any] = {}


def is_explanation(context: Any, idx: int) -> bool:
    """True when request ``idx`` of the batch came in on an explanation endpoint.

    The frontend adds ``explain: False`` to every request and then ``explain: True`` on the
    explanation endpoints; its header map keeps the last value, so a client cannot turn a
    prediction into an explanation by sending the header itself.
    """
    return bool(context.get_request_header(idx, HEADER) == "True")


@dataclass(frozen=True)
class ExplanationRequest:
    """A valid explanation request: its rows, one target per row (-1: the predicted class)
    and its baseline."""

    parsed: Parsed
    targets: torch.Tensor  # int64 [n]
    baseline: torch.Tensor  # float32 [F]
    baseline_source: str  # "training_mean" | "zeros" | "request"


class Options:
    """Reads the options of explanation requests for one model; built once per worker."""

    def __init__(self, card: ModelCard, settings: ExplainSettings, schema: Schema) -> None:
        self.settings = settings
        self.schema = schema  # the bounds a baseline must keep too
        self.feature_names = card.feature_names
        self.class_names = card.class_names
        self.class_index = {name: i for i, name in enumerate(card.class_names)}
        self.mean = torch.tensor(card.normalisation["mean"], dtype=torch.float32)

    def request(self, parsed: Parsed, headers: Mapping[str, Any]) -> ExplanationRequest:
        """The explanation options of one parsed request, or a 4xx naming what is wrong."""
        n = parsed.rows.shape[0]
        if n > self.settings.max_rows:
            raise RequestError(
                413,
                "too_many_rows",
                f"explanations: {n} rows, the limit is {self.settings.max_rows} per request "
                f"(each row costs {self.settings.steps} or more forward and backward passes); split the request",
            )
        doc = parsed.doc if parsed.doc is not None else NO_DOC
        lowered = {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}
        target = self.targets(option(lowered, doc, "target"), n)
        baseline, source = self.baseline(option(lowered, doc, "baseline"))
        return ExplanationRequest(parsed, target, baseline, source)

    def targets(self, value: Any, n: int) -> torch.Tensor:
        """One class id per row; -1 where the predicted class is meant."""
        if value is None:
            return torch.full((n,), -1, dtype=torch.long)
        if isinstance(value, list):
            if len(value) != n:
                raise invalid_target(f"target: {len(value)} targets for {n} rows; give one per row or one for all")
            return torch.tensor([self.class_id(v, f"target[{i}]") for i, v in enumerate(value)], dtype=torch.long)
        return torch.full((n,), self.class_id(value, "target"), dtype=torch.long)

    def class_id(self, value: Any, where: str) -> int:
        """A class name, else an integer class id (a string of digits counts, for the header)."""
        if isinstance(value, str) and value in self.class_index:
            return self.class_index[value]
        as_int: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            as_int = value
        elif isinstance(value, str) and CLASS_ID.fullmatch(value.strip()):
            as_int = int(value)
        if as_int is not None and 0 <= as_int < len(self.class_names):
            return as_int
        raise invalid_target(
            f"{where}: {value!r} is not a class; use a name of {list(self.class_names)} "
            f"or an id from 0 to {len(self.class_names) - 1}"
        )

    def baseline(self, value: Any) -> tuple[torch.Tensor, str]:
        """The training mean by default; ``"zeros"``; or a full row (JSON array or object)."""
        if value is None or value == "mean":
            return self.mean, "training_mean"
        if value == "zeros":
            return torch.zeros_like(self.mean), "zeros"
        names = self.feature_names
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in names]
            missing = [k for k in names if k not in value]
            if unknown or missing:
                what = f"unknown feature {unknown[0]!r}" if unknown else f"missing feature {missing[0]!r}"
                raise invalid_baseline(f"baseline: {what}; the features are {list(names)}")
            value = [value[k] for k in names]
        if not isinstance(value, list):
            raise invalid_baseline(f"baseline: {value!r} is not 'mean', 'zeros' or a row of {len(names)} features")
        if len(value) != len(names):
            raise invalid_baseline(f"baseline: expected {len(names)} features, got {len(value)}")
        for name, v in zip(names, value):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= FLOAT32_MAX:
                raise invalid_baseline(f"baseline ({name}): {v!r} is not a finite float32 number")
        try:  # the rows' bounds: a baseline far outside the training range overflows as a row does
            x = torch.tensor([value], dtype=torch.float64)
            row = _checked(x, self.schema, lambda _, j: f"baseline ({names[j]})")
        except RequestError as exc:
            raise invalid_baseline(exc.message) from None
        return row[0], "request"


def option(headers: Mapping[str, str], doc: Mapping[str, Any], name: str) -> Any:
    """An option from its header (names lower-cased) or the JSON body, refusing one in both."""
    header = headers.get(OPTION_HEADERS[name])
    in_body = doc.get(name)
    parameters = doc.get("parameters")
    if in_body is None and isinstance(parameters, Mapping):
        in_body = parameters.get(name)
    if header is not None and in_body is not None:
        raise RequestError(
            400,
            f"invalid_{name}",
            f"{name}: given both in the {OPTION_HEADERS[name]} header and in the body; give it once",
        )
    return header.strip() if header is not None else in_body


def no_explanations(card: ModelCard) -> NoReturn:
    """The 400 for a variant without autograd (int8, onnx): the endpoint exists, this model
    cannot answer it, and the message says which variants can (README "Model variants")."""
    raise RequestError(
        400,
        "explanations_unsupported",
        f"explanations need gradients; this model is served as the {card.variant} variant "
        f"(runtime {card.runtime}), which has none: serve the torchscript or export variant to explain",
    )


def invalid_target(message: str) -> RequestError:
    return RequestError(400, "invalid_target", message)


def invalid_baseline(message: str) -> RequestError:
    return RequestError(400, "invalid_baseline", message)

"""Explanations: per-row feature attributions by Integrated Gradients on the served model.

``POST /explanations/<name>`` reaches the handler with the request header ``explain: True``
(TorchServe's frontend sets it per request; BaseHandler reads only request 0's, so this module
reads it per request index). An explanation request is parsed by the same contract as a
prediction, then this module adds its own options (the target class, the baseline) and
answers with one attribution per feature for each row.

Method: Integrated Gradients (Sundararajan et al., 2017) of the target class's probability
along the straight path from a baseline (the training mean from the model card unless the
request asks for another) to the row. The attributions sum to p(row) - p(baseline) up to the
quadrature error, which every answer reports. The integral uses the midpoint rule with
``steps`` points; rows whose error exceeds ``tolerance`` are recomputed with 4x the steps, up
to ``max_steps`` (a ReLU network's kinks make the error shrink only as 1/steps: measured on
the test split, 64 steps leave at most 7.3e-4, 1024 steps 5.5e-5 with the shipped minmax
scaling; 6.5e-3 and 6.8e-4 with standard scaling).

Written with autograd (~20 lines) rather than Captum: Captum 0.9.0 took 340-470 ms to import
in a worker that already has torch and loads 293 modules including matplotlib (+34 MiB RSS,
~80 MB on disk with its dependencies), on every worker start and restart, against ~2 ms for
this explainer's set-up and warm-up. On the test split its IntegratedGradients with
method="riemann_middle" gives the very same attributions as the function below (max |diff| 0.0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

import orjson
import torch

from common.model_card import ModelCard
from handlers.contract import FLOAT32_MAX, JSON, Parsed, RequestError, Schema, media_type
from handlers.contract.validation import _checked

HEADER = "explain"
# options for any body format (TorchServe 0.12 forwards no query string to the handler)
OPTION_HEADERS = {"target": "x-explain-target", "baseline": "x-explain-baseline"}
METHOD = "integrated_gradients"
# path points (rows x steps) per forward/backward pass: ~25 MB of activations for this MLP
CHUNK_POINTS = 1 << 16
REFINE = 4  # steps multiply by this for the rows still above the tolerance
CLASS_ID = re.compile(r"-?[0-9]+")  # ASCII digits only: "²".isdigit() is True, int("²") raises


def is_explanation(context: Any, idx: int) -> bool:
    """True when request ``idx`` of the batch came in on an explanation endpoint.

    The frontend adds ``explain: False`` to every request and then ``explain: True`` on the
    explanation endpoints; its header map keeps the last value, so a client cannot turn a
    prediction into an explanation by sending the header itself.
    """
    return bool(context.get_request_header(idx, HEADER) == "True")


@dataclass(frozen=True)
class ExplainSettings:
    """The ``handler.explain`` section of serve_config/model-config.yaml."""

    steps: int = 64
    max_steps: int = 1024
    tolerance: float = 1e-3
    max_rows: int = 100
    # path points (rows x steps, summed over the passes) one batch may spend; None: unbounded
    max_batch_points: int | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> ExplainSettings:
        section = section or {}
        points = section.get("max_batch_points")
        settings = cls(
            steps=int(section.get("steps", cls.steps)),
            max_steps=int(section.get("max_steps", cls.max_steps)),
            tolerance=float(section.get("tolerance", cls.tolerance)),
            max_rows=int(section.get("max_rows", cls.max_rows)),
            max_batch_points=None if points is None else int(points),
        )
        if not 1 <= settings.steps <= settings.max_steps or settings.max_rows < 1 or settings.tolerance < 0:
            raise ValueError(f"handler.explain: need 1 <= steps <= max_steps, max_rows >= 1, tolerance >= 0: {section}")
        if settings.max_batch_points is not None and settings.max_batch_points < settings.max_rows * settings.steps:
            raise ValueError(f"handler.explain: max_batch_points must admit one request of max_rows rows: {section}")
        return settings


@dataclass(frozen=True)
class ExplanationRequest:
    """A valid explanation request: its rows, one target per row (-1: the predicted class)
    and its baseline."""

    parsed: Parsed
    targets: torch.Tensor  # int64 [n]
    baseline: torch.Tensor  # float32 [F]
    baseline_source: str  # "training_mean" | "zeros" | "request"


class Explainer:
    """Attributions for the served model; built once per worker."""

    def __init__(
        self,
        model: Any,
        card: ModelCard,
        settings: ExplainSettings,
        model_name: str,
        model_version: str,
        schema: Schema | None = None,
    ) -> None:
        self.model = model
        self.schema = schema or Schema(card.feature_names)  # the bounds a baseline must keep too
        self.settings = settings
        self.model_name = model_name
        self.model_version = model_version
        self.feature_names = card.feature_names
        self.class_names = card.class_names
        self.class_index = {name: i for i, name in enumerate(card.class_names)}
        self.mean = torch.tensor(card.normalisation["mean"], dtype=torch.float32)

    def warm_up(self) -> None:
        """TorchScript profiles the first calls with gradients on: pay that at start-up."""
        x = self.mean.unsqueeze(0) + 1
        target = torch.zeros(1, dtype=torch.long)
        for _ in range(2):
            integrated_gradients(self.model, x, self.mean.unsqueeze(0), target, 2)

    # ------------------------------------------------------------ requests

    def request(
        self, parsed: Parsed, headers: Mapping[str, Any], body: Any, content_type: str | None
    ) -> ExplanationRequest:
        """The explanation options of one parsed request, or a 4xx naming what is wrong.

        Options come from the headers ``X-Explain-Target`` and ``X-Explain-Baseline`` (any
        format) or, in a JSON body, from the fields ``target`` and ``baseline`` (v2 bodies may
        put them in ``parameters``). One option given in both places is refused, not guessed.
        """
        n = parsed.rows.shape[0]
        if n > self.settings.max_rows:
            raise RequestError(
                413,
                "too_many_rows",
                f"explanations: {n} rows, the limit is {self.settings.max_rows} per request "
                f"(each row costs {self.settings.steps} or more forward and backward passes); split the request",
            )
        doc = json_options(body) if _is_json(content_type) else {}
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

    # ------------------------------------------------------------ answers

    def explain(self, requests: Sequence[ExplanationRequest]) -> list[dict[str, Any] | RequestError]:
        """One answer per request: all the rows of those the batch's budget admits go through
        one batched computation; the others get a 429 (issue 25: 64 requests of 100 rows with
        a far baseline cost ~6 s of worker time, and the predictions in the batch waited)."""
        admitted, budget = self.admit(requests)
        if not admitted:
            return [self.over_budget() for _ in requests]
        sizes = [r.parsed.rows.shape[0] for r in admitted]
        x = torch.cat([r.parsed.rows for r in admitted])
        base = torch.cat([r.baseline.expand(n, -1) for r, n in zip(admitted, sizes)])
        result = self.attribute(x, base, torch.cat([r.targets for r in admitted]), budget)
        bodies = {id(r): self.body(r, part) for r, part in zip(admitted, result.split(sizes))}
        return [bodies.get(id(r)) or self.over_budget() for r in requests]

    def admit(self, requests: Sequence[ExplanationRequest]) -> tuple[list[ExplanationRequest], int | None]:
        """The requests whose first pass (rows x steps) fits the batch's budget, in batch
        order, and the budget left for refining their rows."""
        budget = self.settings.max_batch_points
        if budget is None:
            return list(requests), None
        admitted = []
        for r in requests:
            cost = r.parsed.rows.shape[0] * self.settings.steps
            if cost <= budget:
                admitted.append(r)
                budget -= cost
        return admitted, budget

    def over_budget(self) -> RequestError:
        return RequestError(
            429,
            "explanation_budget_spent",
            f"explanations: the requests before this one spent this batch's budget of "
            f"{self.settings.max_batch_points} path points (rows x steps, handler.explain.max_batch_points); "
            "retry, or send fewer rows per request",
        )

    def attribute(
        self, x: torch.Tensor, base: torch.Tensor, targets: torch.Tensor, budget: int | None = None
    ) -> Attributions:
        """Attributions of rows ``x`` against baselines ``base`` (both [n, F]) for ``targets``
        (-1: the predicted class). Rows whose completeness error exceeds the tolerance are
        redone with more steps, so a row costs ``steps`` passes unless it needs more, while
        ``budget`` (path points for the refinements) lasts: a row it leaves out keeps its
        coarser attributions and reports their error and steps, as every row does."""
        with torch.inference_mode(False), torch.no_grad():
            probabilities = torch.softmax(self.model(x), dim=1)
            at_base = torch.softmax(self.model(base), dim=1)
        targets = torch.where(targets < 0, probabilities.argmax(dim=1), targets)
        result = Attributions(
            probabilities=probabilities,
            targets=targets,
            attributions=torch.zeros_like(x),
            baseline=base,
            at_row=probabilities.gather(1, targets.unsqueeze(1)).squeeze(1),
            at_baseline=at_base.gather(1, targets.unsqueeze(1)).squeeze(1),
            errors=torch.zeros(x.shape[0]),
            steps=torch.zeros(x.shape[0], dtype=torch.long),
        )
        difference = result.at_row - result.at_baseline
        todo = torch.arange(x.shape[0])
        steps = self.settings.steps
        while todo.numel():
            attr = integrated_gradients(self.model, x[todo], base[todo], targets[todo], steps)
            err = (attr.sum(dim=1) - difference[todo]).abs()
            result.attributions[todo], result.errors[todo], result.steps[todo] = attr, err, steps
            if steps >= self.settings.max_steps:
                break
            todo = todo[err > self.settings.tolerance]
            steps = min(steps * REFINE, self.settings.max_steps)
            if budget is not None:
                todo = todo[: budget // steps]
                budget -= todo.numel() * steps
        return result

    def body(self, request: ExplanationRequest, result: Attributions) -> dict[str, Any]:
        """The answer to one request (its slice of the batch's result)."""
        classes, features = self.class_names, self.feature_names
        baseline = dict(zip(features, request.baseline.tolist()))
        rows = [
            {
                "label": classes[c],
                "class_id": c,
                "probabilities": dict(zip(classes, p)),
                "target": classes[t],
                "target_id": t,
                "attributions": dict(zip(features, a)),
                "baseline": baseline,
                "output_at_row": o_row,
                "output_at_baseline": o_base,
                "approximation_error": e,
                "steps": s,
            }
            for c, p, t, a, o_row, o_base, e, s in zip(
                result.probabilities.argmax(dim=1).tolist(),
                result.probabilities.tolist(),
                result.targets.tolist(),
                result.attributions.tolist(),
                result.at_row.tolist(),
                result.at_baseline.tolist(),
                result.errors.tolist(),
                result.steps.tolist(),
            )
        ]
        answer: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "method": METHOD,
            "output": "probability",
            "baseline_source": request.baseline_source,
            "explanations": rows,
        }
        if request.parsed.request_id is not None:
            answer["id"] = request.parsed.request_id
        return answer


@dataclass(frozen=True)
class Attributions:
    """Per row: probabilities [n, C], target ids, attributions [n, F], baselines [n, F], the
    target's probability at the row and at the baseline, the completeness error, steps used."""

    probabilities: torch.Tensor
    targets: torch.Tensor
    attributions: torch.Tensor
    baseline: torch.Tensor
    at_row: torch.Tensor
    at_baseline: torch.Tensor
    errors: torch.Tensor
    steps: torch.Tensor

    def split(self, sizes: Sequence[int]) -> list[Attributions]:
        parts = [getattr(self, f.name).split(list(sizes)) for f in fields(self)]
        return [Attributions(*row) for row in zip(*parts)]


def integrated_gradients(
    model: Any, x: torch.Tensor, baseline: torch.Tensor, targets: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrated Gradients of softmax(model(.))[target] from ``baseline`` to ``x`` [n, F].

    Midpoint rule: the mean gradient at alphas (k + 0.5) / steps, times (x - baseline). All
    rows and steps go through one forward and one backward pass per chunk of CHUNK_POINTS;
    ``autograd.grad`` takes the input gradient only, so the model's parameters gather none.
    The handler scores under inference_mode; gradients need it off, hence the guard.
    """
    n, f = x.shape
    rows_per_chunk = max(1, CHUNK_POINTS // steps)
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).view(-1, 1, 1)
    out = []
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, n, rows_per_chunk):
            xs, bs = x[start : start + rows_per_chunk], baseline[start : start + rows_per_chunk]
            delta = xs - bs
            path = (bs + alphas * delta).reshape(-1, f).requires_grad_(True)  # [steps * rows, F]
            chosen = targets[start : start + rows_per_chunk].repeat(steps).unsqueeze(1)
            output = torch.softmax(model(path), dim=1).gather(1, chosen).sum()
            (grad,) = torch.autograd.grad(output, path)
            out.append(delta * grad.view(steps, -1, f).mean(dim=0))
    return torch.cat(out).detach()


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


def json_options(body: Any) -> Mapping[str, Any]:
    """The JSON body as a mapping (TorchServe has usually decoded it already)."""
    if isinstance(body, Mapping):
        return body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = json.loads(body)  # valid: the contract parsed it already (NaN, huge integers)
    return doc if isinstance(doc, Mapping) else {}


def _is_json(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == JSON or kind.endswith("+json")


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

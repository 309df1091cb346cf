"""Explanations of a batch: which requests the batch's budget admits, one batched attribution
over their rows (``attribution``), and each request's answer body. The request options are
``options``' job; this module only composes the two for the pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from common.model_card import ModelCard
from handlers.contract import Parsed, RequestError, Schema
from handlers.explain.attribution import Attributions, attribute, integrated_gradients
from handlers.explain.options import ExplanationRequest, Options
from handlers.settings import ExplainSettings

METHOD = "integrated_gradients"


class Explainer:
    """Attributions for the served model; built once per worker."""

    def __init__(
        self,
        model: Any,
        card: ModelCard,
        settings: ExplainSettings,
        model_name: str,
        model_version: str,
        schema: Schema,
    ) -> None:
        self.model = model
        self.settings = settings
        self.options = Options(card, settings, schema)
        self.model_name = model_name
        self.model_version = model_version
        self.feature_names = card.feature_names
        self.class_names = card.class_names
        self.mean = self.options.mean

    def warm_up(self) -> None:
        """TorchScript profiles the first calls with gradients on: pay that at start-up."""
        x = self.mean.unsqueeze(0) + 1
        target = torch.zeros(1, dtype=torch.long)
        for _ in range(2):
            integrated_gradients(self.model, x, self.mean.unsqueeze(0), target, 2)

    def request(self, parsed: Parsed, headers: Mapping[str, Any]) -> ExplanationRequest:
        """The options of one request (``options.Options.request``)."""
        return self.options.request(parsed, headers)

    def attribute(
        self, x: torch.Tensor, base: torch.Tensor, targets: torch.Tensor, budget: int | None = None
    ) -> Attributions:
        return attribute(self.model, x, base, targets, self.settings, budget)

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

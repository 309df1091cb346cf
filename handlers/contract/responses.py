"""Answers: the body for each protocol, and compact JSON encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
import torch

from handlers.contract.validation import Parsed


@dataclass(frozen=True)
class Responder:
    """Shapes answers; built once per worker from the model card."""

    model_name: str
    model_version: str
    class_names: tuple[str, ...]

    def body(self, parsed: Parsed, probabilities: torch.Tensor) -> dict[str, Any]:
        class_ids = probabilities.argmax(dim=1).tolist()
        if parsed.protocol == "v2":
            return self._v2(parsed, probabilities, class_ids)
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "predictions": self.predictions(probabilities, class_ids),
        }

    def predictions(self, probabilities: torch.Tensor, class_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """One ``{"label", "class_id", "probabilities"}`` object per row."""
        if class_ids is None:
            class_ids = probabilities.argmax(dim=1).tolist()
        names = self.class_names
        return [
            {"label": names[c], "class_id": c, "probabilities": dict(zip(names, row))}
            for c, row in zip(class_ids, probabilities.tolist())
        ]

    def _v2(self, parsed: Parsed, probabilities: torch.Tensor, class_ids: list[int]) -> dict[str, Any]:
        n, c = probabilities.shape
        body: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "outputs": [
                {
                    "name": "probabilities",
                    "shape": [n, c],
                    "datatype": "FP32",
                    "data": probabilities.flatten().tolist(),
                    "parameters": {"class_names": list(self.class_names)},
                },
                {
                    "name": "label",
                    "shape": [n],
                    "datatype": "BYTES",
                    "data": [self.class_names[i] for i in class_ids],
                },
                {"name": "class_id", "shape": [n], "datatype": "INT64", "data": class_ids},
            ],
        }
        if parsed.request_id is not None:
            body["id"] = parsed.request_id
        return body


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON; orjson is ~4x faster than the stdlib on 1,000-row answers."""
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson does not take (e.g. integers beyond 64 bits)
        return json.dumps(body, separators=(",", ":")).encode()

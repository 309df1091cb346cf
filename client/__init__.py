"""Python client for the served tabular classifier (see client/api.py)."""

from client.api import (
    Client,
    ClientConfig,
    Explanation,
    Explanations,
    Prediction,
    PredictionError,
    Predictions,
    Scores,
)

__all__ = [
    "Client",
    "ClientConfig",
    "Explanation",
    "Explanations",
    "Prediction",
    "PredictionError",
    "Predictions",
    "Scores",
]

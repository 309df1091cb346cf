"""Python client for the served tabular classifier (see client/api.py)."""

from client.api import Client, ClientConfig, Prediction, PredictionError, Predictions

__all__ = ["Client", "ClientConfig", "Prediction", "PredictionError", "Predictions"]

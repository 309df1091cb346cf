"""Explanations (``POST /explanations/<name>``): per-row feature attributions by Integrated
Gradients on the served model. Three modules, one job each: ``options`` reads a request's
options (target, baseline) from its headers and the body the pipeline decoded, ``attribution``
computes the attributions (pure torch), ``explainer`` spends a batch's budget and shapes the
answers. The names below are the package's surface."""

from handlers.explain.attribution import CHUNK_POINTS, Attributions, integrated_gradients
from handlers.explain.explainer import Explainer
from handlers.explain.options import ExplanationRequest, is_explanation, no_explanations

__all__ = [
    "CHUNK_POINTS",
    "Attributions",
    "ExplanationRequest",
    "Explainer",
    "integrated_gradients",
    "is_explanation",
    "no_explanations",
]

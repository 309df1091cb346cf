"""Integrated Gradients (Sundararajan et al., 2017): per-row feature attributions. Pure torch:
no request, no TorchServe, no settings object beyond the numbers it is given.

The attributions of the target class's probability along the straight path from a baseline
to the row sum to p(row) - p(baseline) up to the quadrature error, which every row reports.
The integral uses the midpoint rule with ``steps`` points; rows whose error exceeds
``tolerance`` are recomputed with 4x the steps, up to ``max_steps`` (a ReLU network's kinks
make the error shrink only as 1/steps: measured on the test split, 64 steps leave at most
7.3e-4, 1024 steps 5.5e-5 with the shipped minmax scaling; 6.5e-3 and 6.8e-4 with standard).

Written with autograd (~20 lines) rather than Captum: Captum 0.9.0 took 340-470 ms to import
in a worker that already has torch and loads 293 modules including matplotlib (+34 MiB RSS,
~80 MB on disk with its dependencies), on every worker start and restart, against ~2 ms for
this module's set-up and warm-up. On the test split its IntegratedGradients with
method="riemann_middle" gives the very same attributions as the function below (max |diff| 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from handlers import runtimes
from handlers.settings import ExplainSettings

# path points (rows x steps) per forward/backward pass: ~25 MB of activations for this MLP
CHUNK_POINTS = 1 << 16
REFINE = 4  # steps multiply by this for the rows still above the tolerance


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


def attribute(
    model: Any,
    x: torch.Tensor,
    base: torch.Tensor,
    targets: torch.Tensor,
    settings: ExplainSettings,
    budget: int | None = None,
) -> Attributions:
    """Attributions of rows ``x`` against baselines ``base`` (both [n, F]) for ``targets``
    (-1: the predicted class). Rows whose completeness error exceeds the tolerance are
    redone with more steps, so a row costs ``steps`` passes unless it needs more, while
    ``budget`` (path points for the refinements) lasts: a row it leaves out keeps its
    coarser attributions and reports their error and steps, as every row does."""
    with torch.inference_mode(False), torch.no_grad():
        probabilities = runtimes.probabilities(model(x))
        at_base = runtimes.probabilities(model(base))
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
    steps = settings.steps
    while todo.numel():
        attr = integrated_gradients(model, x[todo], base[todo], targets[todo], steps)
        err = (attr.sum(dim=1) - difference[todo]).abs()
        result.attributions[todo], result.errors[todo], result.steps[todo] = attr, err, steps
        if steps >= settings.max_steps:
            break
        todo = todo[err > settings.tolerance]
        steps = min(steps * REFINE, settings.max_steps)
        if budget is not None:
            todo = todo[: budget // steps]
            budget -= todo.numel() * steps
    return result


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

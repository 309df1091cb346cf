"""The network: scaling baked in, then a 2-layer MLP that returns logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

# SCALING=...: "standard" (x - mean) / std, or "minmax" (x - min) / (max - min), the seed's [0, 1]
SCALINGS = ("standard", "minmax")


class TabularMLP(nn.Module):
    """``(x - shift) / scale -> Linear -> ReLU -> Linear``.

    ``shift`` and ``scale`` are buffers fitted on the training split (mean and std, or min and
    range), so they travel inside every exported variant and the server needs no separate
    preprocessing step that could drift from training.
    """

    if TYPE_CHECKING:  # the buffers register_buffer adds; TorchScript infers them itself
        shift: torch.Tensor
        scale: torch.Tensor

    def __init__(self, n_features: int, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def set_normalisation(self, x_train: torch.Tensor, scaling: str = "standard") -> None:
        """Fit the scaling on the training split only (a constant column keeps scale 1)."""
        if scaling == "standard":
            shift, scale = x_train.mean(dim=0), x_train.std(dim=0)
        elif scaling == "minmax":
            shift = x_train.min(dim=0).values
            scale = x_train.max(dim=0).values - shift
        else:
            raise ValueError(f"scaling {scaling!r}: choose one of {SCALINGS}")
        self.shift.copy_(shift)
        self.scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.shift) / self.scale
        logits: torch.Tensor = self.out(torch.relu(self.hidden(x)))
        return logits

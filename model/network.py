"""The network: normalisation baked in, then a 2-layer MLP that returns logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn


class TabularMLP(nn.Module):
    """``(x - mean) / std -> Linear -> ReLU -> Linear``.

    The statistics are buffers, so they travel inside the scripted file and the
    server needs no separate preprocessing step that could drift from training.
    """

    if TYPE_CHECKING:  # the buffers register_buffer adds; TorchScript infers them itself
        mean: torch.Tensor
        std: torch.Tensor

    def __init__(self, n_features: int, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def set_normalisation(self, x_train: torch.Tensor) -> None:
        """Fit the statistics on the training split only (a constant column keeps std 1)."""
        std = x_train.std(dim=0)
        self.mean.copy_(x_train.mean(dim=0))
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        logits: torch.Tensor = self.out(torch.relu(self.hidden(x)))
        return logits

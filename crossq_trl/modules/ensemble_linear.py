"""A stack of independent linear layers evaluated with one batched matmul."""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """``ensemble_size`` independent ``nn.Linear(in_features, out_features)`` layers.

    Input ``[E, *batch, in_features]`` -> output ``[E, *batch, out_features]``, member
    ``e`` using only its own weights. All members run in one ``baddbmm``, which is
    what makes an ensemble critic cost one pass instead of ``E``. Each member is
    initialised exactly like a fresh ``nn.Linear`` (Kaiming-uniform weights, uniform
    bias in ``±1/sqrt(in_features)``), independently of the others.
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        # Stored as [E, in, out] so the forward is a plain batched x @ W.
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's kaiming_uniform_(a=sqrt(5)) is uniform in +-1/sqrt(fan_in); so is its bias.
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, out_features={self.out_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[1:-1]
        flat = x.reshape(self.ensemble_size, -1, self.in_features)
        out = torch.baddbmm(self.bias, flat, self.weight)
        return out.view(self.ensemble_size, *batch_shape, self.out_features)

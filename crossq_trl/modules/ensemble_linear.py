"""A stack of independent linear layers evaluated with one batched matmul."""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """``ensemble_size`` independent ``nn.Linear(in_features, out_features)`` layers.

    All members run in one ``baddbmm``, which is what makes an ensemble critic cost one
    pass instead of ``E``; member ``e`` uses only its own weights. Parameters are stored
    like stacked ``nn.Linear`` ones, ``weight [E, out, in]`` and ``bias [E, out]``, and each
    member is initialised exactly like a fresh ``nn.Linear`` (Kaiming-uniform weights,
    uniform bias in ``±1/sqrt(in_features)``), independently of the others. ``bias=False`` leaves
    the bias out (a layer followed by batch norm, whose shift makes it redundant).

    ``feature_dim=-1``: ``[E, *batch, in] -> [E, *batch, out]``. ``feature_dim=1``
    (feature-major): ``[E, in, *batch] -> [E, out, *batch]``, computed as ``W x``; the critic
    runs its whole body in that layout, where the weight gradient comes out in the
    parameter's own layout and a 1-wide output (the Q head) is a fast row-times-matrix
    product instead of a matrix-vector product, which MKL's batched kernel runs at a
    fraction of its speed.
    """

    def __init__(
        self, ensemble_size: int, in_features: int, out_features: int, *, feature_dim: int = -1, bias: bool = True
    ) -> None:
        super().__init__()
        if feature_dim not in (-1, 1):
            raise ValueError(f"feature_dim must be -1 (features last) or 1 (feature-major), got {feature_dim}.")
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        self.feature_dim = feature_dim
        self.weight = nn.Parameter(torch.empty(ensemble_size, out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(ensemble_size, out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's kaiming_uniform_(a=sqrt(5)) is uniform in +-1/sqrt(fan_in); so is its bias.
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        layout = "" if self.feature_dim == -1 else f", feature_dim={self.feature_dim}"
        return (
            f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, "
            f"out_features={self.out_features}{layout}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_dim == 1:
            batch_shape = x.shape[2:]
            flat = x.reshape(self.ensemble_size, self.in_features, -1)
            if self.bias is None:
                out = torch.bmm(self.weight, flat)
            else:
                out = torch.baddbmm(self.bias.unsqueeze(-1), self.weight, flat)
            return out.view(self.ensemble_size, self.out_features, *batch_shape)
        batch_shape = x.shape[1:-1]
        flat = x.reshape(self.ensemble_size, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(flat, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.view(self.ensemble_size, *batch_shape, self.out_features)

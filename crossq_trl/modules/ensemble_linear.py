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
    fraction of its speed. There a layer with fewer inputs than outputs (the first) takes
    its weight gradient as ``(x g^T)^T`` rather than ``g x^T`` (:class:`_WideningLinear`).
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
            if self.in_features < self.out_features and not torch.is_autocast_enabled(flat.device.type):
                out = _WideningLinear.apply(self.weight, self.bias, flat)
            else:
                out = _feature_major_product(self.weight, self.bias, flat)
            return out.view(self.ensemble_size, self.out_features, *batch_shape)
        batch_shape = x.shape[1:-1]
        flat = x.reshape(self.ensemble_size, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(flat, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.view(self.ensemble_size, *batch_shape, self.out_features)


def _feature_major_product(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``W x + b`` per member: ``W [E, out, in]``, ``x [E, in, N]``, ``b [E, out]`` or None."""
    return torch.bmm(weight, x) if bias is None else torch.baddbmm(bias.unsqueeze(-1), weight, x)


class _WideningLinear(torch.autograd.Function):
    """:func:`_feature_major_product` whose weight gradient is computed as ``(x g^T)^T``, the product with the
    narrow side (``in < out``) as its rows.

    The weight gradient is a product over the ``N`` samples; autograd's ``g x^T`` gives it ``out`` rows of ``in``
    columns. MKL runs a product with few columns at half its speed: for the critic's first layer (23 inputs,
    256 outputs, 512 rows of the joint batch) ``(x g^T)^T`` takes 0.23 ms where ``g x^T`` takes 0.42 ms, about 2%
    of a whole [256, 256] update. Same gradient, summed in another order. Not used under autocast, whose casts
    only the plain product records for its backward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return _feature_major_product(weight, bias, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, _, x = inputs
        ctx.save_for_backward(weight, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, x = ctx.saved_tensors
        need_weight, need_bias, need_x = ctx.needs_input_grad
        grad_weight = torch.bmm(x, grad.transpose(1, 2)).transpose(1, 2) if need_weight else None
        grad_bias = grad.sum(-1) if need_bias else None
        grad_x = torch.bmm(weight.transpose(1, 2), grad) if need_x else None
        return grad_weight, grad_bias, grad_x

"""Weight normalization as CrossQ + WN and XQC use it: a projection, not a reparametrization.

Palenicek et al. 2025 (CrossQ + WN, arXiv 2502.07523) and XQC (arXiv 2509.25174) keep each output
unit of a normalized layer on the unit sphere: after every optimizer step, the unit's weights (with
its bias, for the hidden layers) are divided by their joint L2 norm (``norm_dense_layer`` /
``norm_network`` in danielpalenicek/xqc ``xqc/networks/common.py``; also applied once at
initialization). With batch norm after the layer the function is scale-invariant in those weights, so
the projection only fixes the effective learning rate, which is what keeps the critic stable at high
update-to-data ratios. ``torch.nn.utils.parametrizations.weight_norm`` learns the norm as a separate
parameter instead, which is not the papers' method.

A layer is marked with :func:`mark_unit_norm`; :func:`project_weights_` projects every marked layer of
a module (call it after ``optimizer.step()`` in a plain loop; :class:`~crossq_trl.CrossQUpdate` does it
inside its compiled step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

UNIT_NORM = "unit_norm"  # attribute of a marked layer: "weight_and_bias" or "weight"


def mark_unit_norm(layer: nn.Module, *, with_bias: bool) -> nn.Module:
    """Mark ``layer`` (``nn.Linear`` or :class:`~crossq_trl.modules.EnsembleLinear`, weight ``[..., out, in]``)
    for the unit-norm projection, the bias included when ``with_bias`` and the layer has one; projects it now."""
    setattr(layer, UNIT_NORM, "weight_and_bias" if with_bias and layer.bias is not None else "weight")
    with torch.no_grad():
        _project_layer(layer)
    return layer


def unit_norm_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str | None]]:
    """``(weight name, bias name or None)`` of every marked layer of ``module``, names as in ``named_parameters``."""
    pairs = []
    for name, layer in module.named_modules(prefix=prefix):
        kind = getattr(layer, UNIT_NORM, None)
        if kind is not None:
            dot = f"{name}." if name else ""
            pairs.append((f"{dot}weight", f"{dot}bias" if kind == "weight_and_bias" else None))
    return pairs


def project_unit_norm_(weight: Tensor, bias: Tensor | None = None) -> None:
    """Divide each output unit's ``(weight row, bias)`` by its L2 norm, in place (``weight [..., out, in]``)."""
    squared = weight.square().sum(-1)
    if bias is not None:
        squared = squared + bias.square()
    inv_norm = squared.rsqrt()
    weight.mul_(inv_norm.unsqueeze(-1))
    if bias is not None:
        bias.mul_(inv_norm)


def _project_layer(layer: nn.Module) -> None:
    bias = layer.bias if getattr(layer, UNIT_NORM) == "weight_and_bias" else None
    project_unit_norm_(layer.weight, bias)


@torch.no_grad()
def project_weights_(module: nn.Module) -> None:
    """Project every layer of ``module`` marked by :func:`mark_unit_norm` back onto the unit sphere."""
    for layer in module.modules():
        if getattr(layer, UNIT_NORM, None) is not None:
            _project_layer(layer)

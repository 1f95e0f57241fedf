"""The CrossQ network body: ``BRN(input) -> [Linear -> activation -> BRN] x n``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from crossq_trl.modules.batch_renorm import BatchRenorm1d
from crossq_trl.modules.ensemble_linear import EnsembleLinear
from crossq_trl.modules.weight_norm import mark_unit_norm


def concat_features(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate input vectors along the feature axis, as float."""
    x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
    return x if x.is_floating_point() else x.float()


@dataclass(frozen=True)
class BatchRenormConfig:
    """Options of every BatchRenorm1d layer in a CrossQ network (defaults of the paper)."""

    momentum: float = 0.01
    eps: float = 1e-3
    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 100_000


def crossq_body(
    in_features: int,
    net_arch: Sequence[int],
    *,
    activation: type[nn.Module] = nn.ReLU,
    batch_norm: bool = True,
    batch_renorm: BatchRenormConfig = BatchRenormConfig(),
    ensemble_size: int | None = None,
    pre_activation_norm: bool = False,
    weight_norm: bool = False,
) -> nn.Sequential:
    """Build ``BRN(input) -> [Linear(h) -> activation -> BRN] x len(net_arch)``.

    Without ``ensemble_size`` the body takes ``[*batch, features]``. With it, the linears
    are :class:`EnsembleLinear`, each BRN keeps per-member statistics, and the body runs
    feature-major, ``[E, features, *batch]`` (see :class:`EnsembleLinear` for why). With
    ``batch_norm=False`` every BRN is left out (plain SAC-style MLP).

    ``pre_activation_norm=True`` orders each block ``Linear(h, no bias) -> BRN -> activation``,
    XQC's block (``XQCBlock`` in danielpalenicek/xqc ``xqc/networks/mlp.py``).
    ``weight_norm=True`` marks every hidden linear for the unit-norm projection of
    :mod:`crossq_trl.modules.weight_norm` (weights and bias per output unit, as ``norm_network`` does).
    """
    if not net_arch or any(int(h) < 1 for h in net_arch):
        raise ValueError(f"net_arch must be a non-empty list of positive layer sizes, got {list(net_arch)}.")

    def norm(features: int) -> list[nn.Module]:
        if not batch_norm:
            return []
        return [BatchRenorm1d(features, ensemble_size=ensemble_size, feature_dim=feature_dim, **asdict(batch_renorm))]

    def linear(fan_in: int, fan_out: int) -> nn.Module:
        if ensemble_size is None:
            layer = nn.Linear(fan_in, fan_out, bias=not pre_norm)
        else:
            layer = EnsembleLinear(ensemble_size, fan_in, fan_out, feature_dim=feature_dim, bias=not pre_norm)
        return mark_unit_norm(layer, with_bias=True) if weight_norm else layer

    feature_dim = -1 if ensemble_size is None else 1
    pre_norm = pre_activation_norm and batch_norm
    layers = norm(in_features)
    fan_in = in_features
    for hidden in net_arch:
        if pre_norm:
            layers += [linear(fan_in, int(hidden)), *norm(int(hidden)), activation()]
        else:
            layers += [linear(fan_in, int(hidden)), activation(), *norm(int(hidden))]
        fan_in = int(hidden)
    return nn.Sequential(*layers)

"""The action distribution of a gSDE actor: a Gaussian around ``loc`` whose draw is fixed by the exploration noise."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.nn.functional import softplus

_LOG_2PI = math.log(2 * math.pi)


def tanh_log_abs_det_jacobian(x: Tensor) -> Tensor:
    """``log(1 - tanh(x)^2)`` written ``2 (log 2 - x - softplus(-2x))``: finite where tanh saturates."""
    return 2.0 * (math.log(2.0) - x - softplus(-2.0 * x))


class GSDETanhNormal(Distribution):
    """``a = low + (high - low) (tanh(x) + 1) / 2`` with ``x = loc + noise ~ N(loc, scale^2)``.

    In gSDE (Raffin et al., CoRL 2021) the pre-tanh noise is ``theta(s)^T E``: a linear map of the
    actor's latent features by an exploration matrix ``E`` whose entries are ``N(0, std^2)``. Given the
    features, the noise is Gaussian with variance ``theta(s)^2 @ std^2`` (``scale^2``), and a draw is fully
    determined by ``E``: the actor computes ``noise`` and this distribution squashes and scores it.

    :meth:`rsample_and_log_prob` scores the exact pre-tanh draw (no ``atanh`` of a saturated action) with
    the exact tanh Jacobian; :meth:`log_prob` scores any action by inverting the squashing. Log-probabilities
    are those of actions in ``[low, high]``, as for TorchRL's ``TanhNormal``.
    """

    arg_constraints: ClassVar[dict] = {}
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, noise: Tensor, low: Tensor, high: Tensor) -> None:
        self.loc, self.scale, self.noise = loc, scale, noise
        self.low, self.high = low, high
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _squash(self, x: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * (torch.tanh(x) + 1) / 2

    def _log_prob_pre_tanh(self, x: Tensor) -> Tensor:
        gaussian = -0.5 * ((x - self.loc) / self.scale).pow(2) - self.scale.log() - 0.5 * _LOG_2PI
        log_half_range = ((self.high - self.low) / 2).log()
        return (gaussian - tanh_log_abs_det_jacobian(x) - log_half_range).sum(-1)

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        if len(sample_shape) > 0:
            raise ValueError("A gSDE draw is fixed by its exploration matrix: sample_shape must be empty.")
        x = self.loc + self.noise
        return self._squash(x), self._log_prob_pre_tanh(x)

    def sample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: Tensor) -> Tensor:
        unit = ((value - self.low) / (self.high - self.low) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        return self._log_prob_pre_tanh(torch.atanh(unit))

    @property
    def mode(self) -> Tensor:
        return self._squash(self.loc)

    @property
    def deterministic_sample(self) -> Tensor:
        return self.mode

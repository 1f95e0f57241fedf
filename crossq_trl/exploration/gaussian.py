"""Gaussian action noise: independent ``N(mean, sigma^2)`` draws at every step."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from crossq_trl.exploration.action_noise import ActionNoise, action_vector


# Not TorchRL's AdditiveGaussianModule: it anneals sigma and adds noise in env units, not to the [-1, 1] action.
class GaussianActionNoise(ActionNoise):
    """``mean + sigma * N(0, 1)`` per env and step, sb3's ``NormalActionNoise`` drawn from torch's generator.

    Args:
        mean, sigma: arrays of the action shape (in units of the action scaled to ``[-1, 1]``).
        n_envs: number of envs, each with its own draws.
    """

    def __init__(self, mean: np.ndarray | Tensor, sigma: np.ndarray | Tensor, *, n_envs: int = 1) -> None:
        mean, sigma = action_vector("mean", mean), action_vector("sigma", sigma)
        if mean.shape != sigma.shape or (sigma < 0).any():
            raise ValueError(f"mean and sigma need the same shape and sigma >= 0; got {mean} and {sigma}.")
        super().__init__(mean.shape[0], n_envs)
        self.register_buffer("mean", mean)
        self.register_buffer("sigma", sigma)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, sigma={self.sigma.tolist()}, n_envs={self.n_envs}"

    def sample(self) -> Tensor:
        return self.mean + self.sigma * torch.randn(self.n_envs, self.action_dim, device=self.mean.device)

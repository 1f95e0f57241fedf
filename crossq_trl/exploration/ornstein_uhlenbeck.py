"""Ornstein-Uhlenbeck action noise: temporally correlated noise that drifts back to its mean."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from crossq_trl.exploration.action_noise import ActionNoise, action_vector


# Not TorchRL's OrnsteinUhlenbeckProcessModule: it anneals its scale and keeps its state in the rollout's
# tensordict (out of checkpoints), with noise in env units rather than added to the [-1, 1] action.
class OrnsteinUhlenbeckActionNoise(ActionNoise):
    """``x <- x + theta (mean - x) dt + sigma sqrt(dt) N(0, 1)`` per env, sb3's ``OrnsteinUhlenbeckActionNoise``
    with one state per env; :meth:`reset` puts an env's state back to ``initial_noise`` (default 0).

    Args:
        mean, sigma: arrays of the action shape (in units of the action scaled to ``[-1, 1]``).
        theta: rate of mean reversion. dt: time step.
        initial_noise: the state after a reset (an array of the action shape), zeros by default.
        n_envs: number of envs, each with its own process.
    """

    def __init__(
        self,
        mean: np.ndarray | Tensor,
        sigma: np.ndarray | Tensor,
        theta: float = 0.15,
        dt: float = 1e-2,
        initial_noise: np.ndarray | Tensor | None = None,
        *,
        n_envs: int = 1,
    ) -> None:
        mean, sigma = action_vector("mean", mean), action_vector("sigma", sigma)
        initial = torch.zeros_like(mean) if initial_noise is None else action_vector("initial_noise", initial_noise)
        if not (mean.shape == sigma.shape == initial.shape) or (sigma < 0).any():
            raise ValueError(
                f"mean, sigma and initial_noise need the same shape and sigma >= 0; got {mean}, {sigma}, {initial}."
            )
        if theta < 0 or dt <= 0:
            raise ValueError(f"theta must be >= 0 and dt > 0, got theta={theta}, dt={dt}.")
        super().__init__(mean.shape[0], n_envs)
        self.theta, self.dt = float(theta), float(dt)
        self.register_buffer("mean", mean)
        self.register_buffer("sigma", sigma)
        self.register_buffer("initial", initial)
        self.register_buffer("state", initial.expand(n_envs, -1).clone())

    def extra_repr(self) -> str:
        return (
            f"mean={self.mean.tolist()}, sigma={self.sigma.tolist()}, theta={self.theta}, dt={self.dt}, "
            f"n_envs={self.n_envs}"
        )

    def sample(self) -> Tensor:
        drift = self.theta * (self.mean - self.state) * self.dt
        diffusion = self.sigma * math.sqrt(self.dt) * torch.randn_like(self.state)
        self.state.copy_(self.state + drift + diffusion)
        return self.state.clone()

    def reset(self, mask: Tensor | None = None) -> None:
        if mask is None:
            self.state.copy_(self.initial.expand_as(self.state))
        else:
            self.state[mask.to(self.state.device)] = self.initial

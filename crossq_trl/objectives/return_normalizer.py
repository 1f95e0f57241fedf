"""Reward scaling by the running standard deviation of the discounted return, as XQC does it."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor, nn


class ReturnNormalizer(nn.Module):
    """Divides rewards by ``std(G) + eps``, ``G`` the discounted return of each env so far.

    XQC's ``RewardNormalizer`` (danielpalenicek/xqc ``xqc/normalization/normalization.py``, used in
    ``train_parallel.py`` when ``reward_normalization: true``): after every env step
    ``G = gamma * (1 - done) * G + r`` (``done``: terminated or truncated, of that step), and the running
    variance of ``G`` (all steps so far, every env a sample) is updated; replay rewards are scaled at
    sampling time by the current statistics, so the buffer keeps the env's rewards. The scaled returns
    then fit the fixed support of a categorical critic. The statistics are buffers: they are saved and
    resumed with the loss that holds this module (:class:`~crossq_trl.CrossQLoss`).

    Call :meth:`observe` on every collected batch (``[*envs, time]``, the collector's layout; the
    :class:`~crossq_trl.CrossQ` facade does it); the loss calls the module on the sampled rewards.
    """

    def __init__(
        self,
        gamma: float,
        n_envs: int = 1,
        *,
        eps: float = 1e-8,
        reward_key: NestedKey = ("next", "reward"),
        done_key: NestedKey = ("next", "done"),
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.eps = eps
        self.reward_key, self.done_key = reward_key, done_key
        self.register_buffer("returns", torch.zeros(n_envs, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def observe(self, batch: TensorDictBase) -> TensorDictBase:
        """Advance the returns and their statistics over a collected batch, step by step."""
        rewards = batch.get(self.reward_key).reshape(-1, batch.shape[-1]).to(self.returns)  # [envs, time]
        dones = batch.get(self.done_key).reshape(-1, batch.shape[-1]).to(self.returns)
        for t in range(rewards.shape[1]):
            self.returns.mul_(self.gamma * (1 - dones[:, t])).add_(rewards[:, t])
            self._update_moments(self.returns)
        return batch

    def _update_moments(self, samples: Tensor) -> None:
        """Parallel variance update (Chan et al.), as ``update_mean_var_count_from_moments`` in XQC."""
        batch_count = samples.numel()
        batch_mean, batch_var = samples.mean(), samples.var(unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def scale(self) -> Tensor:
        """``std(G) + eps``, the divisor of the rewards."""
        return self.var.sqrt() + self.eps

    def forward(self, reward: Tensor) -> Tensor:
        return reward / self.scale().to(reward.dtype)

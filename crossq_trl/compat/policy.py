"""sb3's ``model.policy`` surface over crossq_trl's actor and critic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from crossq_trl.modules.gsde import has_gsde, reset_noise


class CrossQPolicy(nn.Module):
    """What an sb3-contrib script touches on ``model.policy``, as a view: ``actor`` and ``critic`` are the
    model's own modules (not copies, so ``parameters()``, ``state_dict()`` and their training mode are the
    model's), ``predict`` is the model's :meth:`~crossq_trl.CrossQ.predict`, as in sb3.

    ``actor`` is a TorchRL ``ProbabilisticActor`` and ``critic`` a ``TensorDictModule`` writing
    ``state_action_value`` (TensorDicts in and out, not sb3's tensors); ``forward(obs, deterministic)`` gives
    actions for a batch of observation tensors, as sb3's ``policy(obs)`` does. Acting and training fix the
    Batch Renormalization mode of each pass themselves, so ``set_training_mode`` only sets the modules' flags.
    """

    def __init__(self, actor: nn.Module, critic: nn.Module, predict: Callable[..., tuple[np.ndarray, Any]]) -> None:
        super().__init__()
        self.actor, self.critic = actor, critic
        self.predict = predict

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action, _ = self.predict(obs.detach().cpu().numpy(), deterministic=deterministic)
        return torch.as_tensor(action, device=obs.device)

    def set_training_mode(self, mode: bool) -> None:
        """Train (True) or eval (False) mode for the actor and the critic, as sb3's ``set_training_mode``."""
        self.train(mode)

    def reset_noise(self, batch_size: int = 1) -> None:
        """New gSDE exploration matrices from the next acting step on. ``batch_size`` is accepted for sb3's
        signature; the matrices are drawn for the number of envs that step acts in."""
        if not has_gsde(self.actor):
            raise ValueError("policy.reset_noise() needs gSDE: build the model with CrossQ(..., use_sde=True).")
        reset_noise(self.actor)

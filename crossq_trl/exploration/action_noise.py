"""The interface of an action noise process: one state per env, sampled once per step, restarted per env."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor, nn


def action_vector(name: str, value) -> Tensor:
    """``value`` (array-like) as a float32 vector, or a ValueError naming ``name``."""
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if tensor.dim() != 1 or not torch.isfinite(tensor).all():
        raise ValueError(
            f"{name} must be a finite array of the action shape, e.g. 0.1 * np.ones(n_actions); got {value!r}."
        )
    return tensor


class ActionNoise(nn.Module, ABC):
    """A noise process over actions with one state per env (``n_envs`` of them).

    :meth:`sample` returns the next noise of every env, ``[n_envs, action_dim]``, in units of the action
    scaled to ``[-1, 1]`` (sb3's convention: the noise is added to the scaled action);
    :meth:`reset` restarts the process of some envs (at the end of their episodes). The state is in
    buffers (or the module's extra state), so it is saved with ``state_dict``.
    """

    def __init__(self, action_dim: int, n_envs: int = 1) -> None:
        super().__init__()
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}.")
        self.action_dim, self.n_envs = action_dim, n_envs

    @abstractmethod
    def sample(self) -> Tensor:
        """The next noise of every env, ``[n_envs, action_dim]``."""

    def reset(self, mask: Tensor | None = None) -> None:
        """Restart the process of the envs where ``mask`` (``[n_envs]`` bool) is set, of all when None.
        Processes without state have nothing to restart."""

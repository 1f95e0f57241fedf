"""Any object with stable-baselines3's ``ActionNoise`` protocol as an :class:`ActionNoise`."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crossq_trl.exploration.action_noise import ActionNoise


def has_sb3_noise_protocol(noise: Any) -> bool:
    """Whether ``noise`` looks like an sb3 ``ActionNoise``: callable (returns the noise) and with ``reset()``."""
    return callable(noise) and callable(getattr(noise, "reset", None))


class SB3ActionNoise(ActionNoise):
    """Wraps an object with sb3's ``ActionNoise`` protocol (``noise() -> np.ndarray`` of the action shape,
    ``noise.reset()``), such as ``NormalActionNoise`` or ``OrnsteinUhlenbeckActionNoise``, without importing sb3.

    With ``n_envs > 1`` each env gets a deep copy of it, as sb3's ``VectorizedActionNoise`` does (an object
    that is already vectorized, with a ``noises`` list of ``n_envs`` entries, is used as is and reset with
    ``reset(indices=[...])``). The objects are saved with ``state_dict`` (pickled, as its extra state), so a
    resumed run continues their processes; noises that draw from NumPy's global generator continue exactly
    when that generator's state is restored too (the training checkpoints do).

    Raises ValueError when the object lacks the protocol or returns noise of another shape than
    ``(action_dim,)``; the shape is checked at construction on a copy, without touching any generator.
    """

    def __init__(self, noise: Any, *, action_dim: int, n_envs: int = 1) -> None:
        super().__init__(action_dim, n_envs)
        if not has_sb3_noise_protocol(noise):
            raise ValueError(
                f"action_noise must have sb3's ActionNoise protocol (noise() -> np.ndarray of the action shape, "
                f"noise.reset()); got {noise!r}."
            )
        self.vectorized = n_envs > 1 and len(getattr(noise, "noises", ())) == n_envs
        if self.vectorized or n_envs == 1:
            self.processes = [noise]
        else:
            self.processes = [copy.deepcopy(noise) for _ in range(n_envs)]
            for process in self.processes:
                process.reset()
        self._shape = (n_envs, action_dim) if self.vectorized else (action_dim,)
        with torch.random.fork_rng(devices=[]):
            numpy_state = np.random.get_state()
            try:
                self._draw(copy.deepcopy(self.processes))
            finally:
                np.random.set_state(numpy_state)

    def _draw(self, processes: list[Any]) -> Tensor:
        values = [np.asarray(process(), dtype=np.float32) for process in processes]
        for value in values:
            if value.shape != self._shape:
                raise ValueError(
                    f"action_noise returned noise of shape {value.shape}, expected {self._shape} (the action "
                    "shape); build it with mean and sigma arrays shaped like np.zeros(n_actions)."
                )
        return torch.from_numpy(np.stack(values).reshape(self.n_envs, self.action_dim))

    def sample(self) -> Tensor:
        return self._draw(self.processes)

    def reset(self, mask: Tensor | None = None) -> None:
        indices = list(range(self.n_envs)) if mask is None else mask.nonzero().flatten().tolist()
        if self.vectorized:
            self.processes[0].reset(indices=indices)
        else:
            for index in indices:
                self.processes[index].reset()

    def get_extra_state(self) -> dict[str, Any]:
        return {"processes": copy.deepcopy(self.processes)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.processes = copy.deepcopy(state["processes"])

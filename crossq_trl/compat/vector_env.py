"""A vectorized environment (sb3 ``VecEnv``, gymnasium ``VectorEnv``) as one batched TorchRL env.

Written here because TorchRL 0.14.1's ``GymWrapper`` does not cover these inputs: it builds its specs from
an sb3 ``VecEnv``'s single-env spaces with the batch size of the vector (a shape mismatch error), detects a
``VecEnv`` only by ``isinstance`` with stable_baselines3 imported, and refuses gymnasium's default
``NEXT_STEP`` autoreset mode. The subclasses differ only in how they read a step and a partial reset.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from crossq_trl.modules.specs import check_vector_action
from crossq_trl.training.lean_gym_env import _box_spec

_DONE_KEYS = ("done", "terminated", "truncated")


class VectorEnvAdapter(EnvBase):
    """``num_envs`` auto-resetting envs stepped together, as a TorchRL env of batch size ``[num_envs]``.

    Each step's ``("next", "observation")`` is the true next observation, the final one of an episode
    included (truncated episodes bootstrap from it); the first observation of the next episode comes from
    TorchRL's partial reset (``_reset``), which a collector calls for the envs that are done. Observations
    are float32 vectors (a Box of another shape is flattened). Closing this env leaves the wrapped vector
    env open: it belongs to the caller, as in sb3, whose ``learn`` does not close it either.
    """

    def __init__(
        self, env: Any, observation_space: gym.Space, action_space: gym.Space, *, device: torch.device | str = "cpu"
    ) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"CrossQ needs a continuous Box action space, got {action_space}.")
        check_vector_action(action_space.shape)
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(
                f"A vector env's observations must be a Box, got {observation_space}: flatten them in each env "
                "(e.g. gymnasium.wrappers.FlattenObservation, sb3's make_vec_env(..., wrapper_class=...))."
            )
        n_envs = int(env.num_envs)
        super().__init__(device=device, batch_size=torch.Size([n_envs]))
        self.vector_env = env
        flat_space = gym.spaces.Box(observation_space.low.reshape(-1), observation_space.high.reshape(-1))
        observation_spec = _box_spec(flat_space).expand(n_envs, *flat_space.shape)
        self.observation_spec = Composite(observation=observation_spec, shape=(n_envs,))
        self.action_spec = _box_spec(action_space).expand(n_envs, *action_space.shape).to(device)
        self.reward_spec = Unbounded((n_envs, 1), dtype=torch.float32, device=device)
        flag = Categorical(2, (n_envs, 1), dtype=torch.bool, device=device)
        self.done_spec = Composite({key: flag.clone() for key in _DONE_KEYS}, shape=(n_envs,), device=device)
        self._seed: int | None = None

    # --- what a subclass provides -------------------------------------------------------

    def _vector_reset(self, seed: int | None) -> np.ndarray:
        """Reset every env; the first observations."""
        raise NotImplementedError

    def _vector_step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every env: ``(next_observation, reward, terminated, truncated)``, the next observation of an env
        whose episode ended being its final one."""
        raise NotImplementedError

    def _restart(self, done: np.ndarray) -> np.ndarray:
        """The first observations of the new episodes of the envs in ``done`` (rows of the other envs unused)."""
        raise NotImplementedError

    # --- TorchRL's EnvBase ----------------------------------------------------------------

    def _observation(self, observation: Any) -> torch.Tensor:
        observation = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device)
        return observation.reshape(*self.batch_size, -1)

    def _flags(self, terminated: np.ndarray, truncated: np.ndarray) -> dict[str, torch.Tensor]:
        terminated = torch.as_tensor(np.asarray(terminated, dtype=bool), device=self.device).reshape(-1, 1)
        truncated = torch.as_tensor(np.asarray(truncated, dtype=bool), device=self.device).reshape(-1, 1)
        return {"done": terminated | truncated, "terminated": terminated, "truncated": truncated}

    def _set_seed(self, seed: int | None) -> None:
        self._seed = seed  # used by the next full reset, as gymnasium's reset(seed=...) and sb3's VecEnv.seed

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        done = None if tensordict is None else tensordict.get("_reset", None)
        if done is None:
            observation = self._vector_reset(self._seed)
            self._seed = None
        else:
            observation = self._restart(done.reshape(-1).cpu().numpy())
        none = np.zeros(self.batch_size, dtype=bool)
        return TensorDict(
            {"observation": self._observation(observation), **self._flags(none, none)},
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        actions = tensordict.get("action").detach().cpu().numpy()
        observation, reward, terminated, truncated = self._vector_step(actions)
        reward = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device).reshape(-1, 1)
        return TensorDict(
            {"observation": self._observation(observation), "reward": reward, **self._flags(terminated, truncated)},
            batch_size=self.batch_size,
            device=self.device,
        )

"""A gymnasium ``VectorEnv`` (``SyncVectorEnv``, ``AsyncVectorEnv``, ``gym.make_vec``) as a TorchRL env.

gymnasium 1.x has three autoreset modes (https://farama.org/Vector-Autoreset-Mode), read correctly here:

- ``NEXT_STEP`` (the default): a step that ends an episode returns its final observation; the env's next
  step would ignore its action and only reset it. The partial reset resets those envs right away instead
  (``reset(options={"reset_mask": ...})``, which clears the pending autoreset), so that no transition
  is lost or invented.
- ``SAME_STEP``: the step returns the new episode's first observation, the final one in
  ``infos["final_obs"]`` (where ``infos["_final_obs"]``).
- ``DISABLED``: nothing is reset by the env; the partial reset does it, as for ``NEXT_STEP``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from crossq_trl.compat.vector_env import VectorEnvAdapter


def is_gym_vector_env(env: Any) -> bool:
    return isinstance(env, gym.vector.VectorEnv)


class GymVectorEnvAdapter(VectorEnvAdapter):
    """A gymnasium ``VectorEnv`` as a TorchRL env of batch size ``[num_envs]`` (see :class:`VectorEnvAdapter`)."""

    def __init__(self, env: gym.vector.VectorEnv, *, device="cpu") -> None:
        self.autoreset_mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        async_env = env.unwrapped
        if (
            self.autoreset_mode == AutoresetMode.NEXT_STEP
            and isinstance(async_env, gym.vector.AsyncVectorEnv)
            and not async_env.shared_memory
        ):
            # gymnasium 1.x's worker clears its pending NEXT_STEP autoreset on a reset only with shared memory:
            # without it, the step after a partial reset would reset that env once more.
            raise ValueError(
                "AsyncVectorEnv(shared_memory=False) in autoreset mode NEXT_STEP cannot be reset per env; "
                "use shared_memory=True (the default) or autoreset_mode=AutoresetMode.SAME_STEP."
            )
        super().__init__(env, env.single_observation_space, env.single_action_space, device=device)
        self._last_observations: np.ndarray | None = None

    def _vector_reset(self, seed: int | None) -> np.ndarray:
        observation, _ = self.vector_env.reset(seed=seed)
        self._last_observations = observation
        return observation

    def _vector_step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        observation, reward, terminated, truncated, infos = self.vector_env.step(actions)
        self._last_observations = observation
        if self.autoreset_mode == AutoresetMode.SAME_STEP and "_final_obs" in infos:
            observation = np.array(observation, dtype=np.float32, copy=True)
            for i in np.flatnonzero(infos["_final_obs"]):
                observation[i] = np.asarray(infos["final_obs"][i], dtype=np.float32).reshape(observation.shape[1:])
        return observation, reward, terminated, truncated

    def _restart(self, done: np.ndarray) -> np.ndarray:
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            return self._last_observations  # reset within the step that ended those episodes
        observation, _ = self.vector_env.reset(options={"reset_mask": done.astype(bool)})
        return observation

"""An sb3 ``VecEnv`` (``DummyVecEnv``, ``SubprocVecEnv``, ``VecNormalize``, ...) as a TorchRL env.

Recognised by its attributes, so stable_baselines3 is never imported. sb3's conventions: ``step`` returns
``(obs, rewards, dones, infos)``; an env whose episode ended is reset inside ``step``, ``obs`` holding its new
first observation and ``infos[i]["terminal_observation"]`` its final one; ``infos[i]["TimeLimit.truncated"]``
says whether the episode was cut by a time limit rather than terminated. A ``VecNormalize`` returns normalised
observations (the final ones too) and rewards, and this env passes them on as they are: CrossQ trains on them
as normalised at that step, where sb3's algorithms store the originals and normalise each sampled batch with
the statistics of the moment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossq_trl.compat.vector_env import VectorEnvAdapter

_VEC_ENV_ATTRIBUTES = ("num_envs", "observation_space", "action_space", "reset", "step_async", "step_wait")
_VEC_ENV_METHODS = ("env_method", "get_attr", "set_attr")


def is_sb3_vec_env(env: Any) -> bool:
    """Whether ``env`` has sb3's ``VecEnv`` interface."""
    return all(hasattr(env, name) for name in _VEC_ENV_ATTRIBUTES + _VEC_ENV_METHODS)


class SB3VecEnvAdapter(VectorEnvAdapter):
    """An sb3 ``VecEnv`` as a TorchRL env of batch size ``[num_envs]`` (see :class:`VectorEnvAdapter`)."""

    def __init__(self, env: Any, *, device="cpu") -> None:
        super().__init__(env, env.observation_space, env.action_space, device=device)
        self._next_first_observations: np.ndarray | None = None

    def _vector_reset(self, seed: int | None) -> np.ndarray:
        if seed is not None:
            self.vector_env.seed(seed)
        return self.vector_env.reset()

    def _vector_step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        env = self.vector_env
        env.step_async(actions)
        observation, reward, done, infos = env.step_wait()
        self._next_first_observations = observation
        done = np.asarray(done, dtype=bool)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & done
        if done.any():
            observation = np.array(observation, dtype=np.float32, copy=True)
            for i in np.flatnonzero(done):
                if "terminal_observation" not in infos[i]:
                    raise ValueError(
                        f"The VecEnv's env {i} ended its episode without infos[{i}]['terminal_observation']: "
                        "CrossQ needs the final observation of each episode (sb3's VecEnvs write it)."
                    )
                observation[i] = np.asarray(infos[i]["terminal_observation"], dtype=np.float32).reshape(
                    observation.shape[1:]
                )
        return observation, reward, done & ~truncated, truncated

    def _restart(self, done: np.ndarray) -> np.ndarray:
        return self._next_first_observations  # the VecEnv reset those envs inside its step

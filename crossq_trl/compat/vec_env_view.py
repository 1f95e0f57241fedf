"""A TorchRL env seen through sb3's ``VecEnv`` interface: what ``model.get_env()`` returns for an env given
by id or as a gymnasium env, as sb3 returns its ``DummyVecEnv`` there."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase

from crossq_trl.modules.specs import observation_keys

_STEP_KEYS = ("reward", "done", "terminated", "truncated")
_NO_SUB_ENVS = "this VecEnv view of a TorchRL env does not reach its sub-envs; use model.env, the TorchRL env."


def _space(spec) -> gym.spaces.Box:
    low, high = spec.space.low, spec.space.high
    return gym.spaces.Box(low.cpu().numpy(), high.cpu().numpy(), dtype=np.float32)


class TorchRLVecEnv:
    """sb3's ``VecEnv`` calls on a TorchRL env (unbatched or ``[n_envs]``): ``reset()`` returns the
    observations ``(n_envs, obs_dim)`` (for Dict observations a dict of such arrays, one per entry, as sb3's
    ``DummyVecEnv``); ``step(actions)`` returns ``(obs, rewards, dones, infos)``, an env whose episode ended
    being reset within the step, with ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]``
    as sb3 writes them. It steps the env itself, not a copy, as sb3's ``get_env()`` does. stable_baselines3 is
    not needed (nor is this an instance of its ``VecEnv`` class).
    """

    def __init__(self, env: EnvBase) -> None:
        self.env = env
        self.num_envs = max(env.batch_size.numel(), 1)
        spec = env.observation_spec_unbatched
        self._keys = observation_keys(spec)
        self._spaces = {key: _space(spec[key]) for key in self._keys}
        single = self._keys == ["observation"]
        self.observation_space = self._spaces["observation"] if single else gym.spaces.Dict(self._spaces)
        self.action_space = _space(env.action_spec_unbatched)
        self._carrier: TensorDictBase | None = None
        self._actions: np.ndarray | None = None

    def _observations(self, tensordict: TensorDictBase) -> np.ndarray | dict[str, np.ndarray]:
        shapes = {key: self._spaces[key].shape for key in self._keys}
        entries = {key: tensordict.get(key).reshape(self.num_envs, *shapes[key]).cpu().numpy() for key in self._keys}
        return entries["observation"] if self._keys == ["observation"] else entries

    def seed(self, seed: int | None = None) -> None:
        self.env.set_seed(seed)

    def reset(self) -> np.ndarray:
        self._carrier = self.env.reset()
        return self._observations(self._carrier)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._carrier is None:
            raise RuntimeError("Call reset() before step(), as with any VecEnv.")
        action_shape = self.env.action_spec.shape
        self._carrier.set("action", torch.as_tensor(self._actions, device=self.env.device).reshape(action_shape))
        step, self._carrier = self.env.step_and_maybe_reset(self._carrier)
        result = step.get("next")
        flat = {key: result.get(key).reshape(self.num_envs).cpu().numpy() for key in _STEP_KEYS}
        terminal = self._observations(result)
        done, time_limit = flat["done"], flat["truncated"] & ~flat["terminated"]  # sb3's TimeLimit.truncated
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(cut)} for cut in time_limit]
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = (
                terminal[i] if isinstance(terminal, np.ndarray) else {key: value[i] for key, value in terminal.items()}
            )
        return self._observations(self._carrier), flat["reward"], done, infos

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.step_async(actions)
        return self.step_wait()

    def close(self) -> None:
        self.env.close()

    # sb3's calls on the envs inside a VecEnv: a TorchRL env has no such list; use model.env, the TorchRL env.

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise NotImplementedError(f"env_method({method_name!r}): {_NO_SUB_ENVS}")

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        raise NotImplementedError(f"get_attr({attr_name!r}): {_NO_SUB_ENVS}")

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise NotImplementedError(f"set_attr({attr_name!r}): {_NO_SUB_ENVS}")

"""Snapshot and restore of a running environment, so a resumed run continues the same episode."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, GymWrapper, TransformedEnv

from crossq_trl.training.lean_gym_env import LeanGymEnv

_MUJOCO_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def _base_env(collector: Collector) -> EnvBase | None:
    env = getattr(collector, "env", None)  # None: the envs live in remote workers
    return env.base_env if isinstance(env, TransformedEnv) else env


def _gym_env(collector: Collector) -> gym.Env | None:
    base = _base_env(collector)
    return base._env if isinstance(base, (GymWrapper, LeanGymEnv)) else None


def _time_limits(env: gym.Env) -> list[gym.wrappers.TimeLimit]:
    wrappers = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            wrappers.append(env)
        env = env.env
    return wrappers


def snapshot_env(collector: Collector) -> dict[str, Any] | None:
    """The collector's current step (its carrier tensordict) and the env's internal state.

    Works for a single gymnasium env: MuJoCo envs through MuJoCo's full integration
    state, others by pickling. Returns None for batched/parallel envs and remote
    collector workers (they restart their episodes on resume).
    """
    env = _gym_env(collector)
    if env is None:
        return None
    # The carrier holds the observation the next action is computed from.
    snapshot: dict[str, Any] = {"carrier": collector._carrier.clone()}
    unwrapped = env.unwrapped
    if isinstance(getattr(unwrapped, "data", None), mujoco.MjData):
        model, data = unwrapped.model, unwrapped.data
        state = np.empty(mujoco.mj_stateSize(model, _MUJOCO_STATE))
        mujoco.mj_getState(model, data, state, _MUJOCO_STATE)
        snapshot["mujoco"] = {
            "state": state,
            "np_random": unwrapped.np_random.bit_generator.state,
            "elapsed_steps": [wrapper._elapsed_steps for wrapper in _time_limits(env)],
        }
    else:
        snapshot["pickled_env"] = pickle.dumps(env)
    return snapshot


def restore_env(collector: Collector, snapshot: dict[str, Any] | None) -> None:
    """Put a collector (built on an env of the same kind) back where :func:`snapshot_env` was."""
    env = _gym_env(collector)
    if snapshot is None or env is None:
        return
    collector._carrier.update(snapshot["carrier"])
    if "mujoco" in snapshot:
        unwrapped, saved = env.unwrapped, snapshot["mujoco"]
        mujoco.mj_setState(unwrapped.model, unwrapped.data, saved["state"], _MUJOCO_STATE)
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
        unwrapped.np_random.bit_generator.state = saved["np_random"]
        for wrapper, steps in zip(_time_limits(env), saved["elapsed_steps"], strict=True):
            wrapper._elapsed_steps = steps
    else:
        _base_env(collector)._env = pickle.loads(snapshot["pickled_env"])

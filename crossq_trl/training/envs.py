"""Building TorchRL environments for CrossQ from an id, a gymnasium env or a TorchRL env."""

from __future__ import annotations

import functools
from collections.abc import Callable

import gymnasium as gym
import torch
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    InitTracker,
    ParallelEnv,
    RewardSum,
    StepCounter,
    TransformedEnv,
)

from crossq_trl.modules.specs import check_action_spec, check_vector_action
from crossq_trl.training.lean_gym_env import LeanGymEnv

EnvLike = str | gym.Env | EnvBase | Callable[[], gym.Env]


def _gym_env(env: str | gym.Env | Callable[[], gym.Env]) -> gym.Env:
    if isinstance(env, str):
        try:
            env = gym.make(env)
        except gym.error.Error as err:
            raise ValueError(f"Cannot make gymnasium env {env!r}: {err}") from err
    elif not isinstance(env, gym.Env):
        env = env()
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"CrossQ needs a continuous Box action space, got {env.action_space}. "
            "Discrete, MultiDiscrete, MultiBinary and Dict actions are not supported."
        )
    check_vector_action(env.action_space.shape)
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        # Discrete / MultiDiscrete / MultiBinary become one-hot vectors, images and Dicts flat vectors.
        env = gym.wrappers.FlattenObservation(env)
    return env


def _lean_gym_env(env: str | Callable[[], gym.Env], mark_episode_start: bool = False) -> LeanGymEnv:
    """Worker-side factory of :func:`make_env`'s ParallelEnv (a picklable function)."""
    return LeanGymEnv(_gym_env(env), mark_episode_start=mark_episode_start)


def _with_crossq_transforms(env: EnvBase, mark_episode_start: bool) -> TransformedEnv:
    """Float observations, episode return (``episode_reward``) and length (``step_count``), and ``is_init``."""
    transforms = [DoubleToFloat(), RewardSum(), StepCounter(), *([InitTracker()] if mark_episode_start else [])]
    return TransformedEnv(env, Compose(*transforms))


def make_env(
    env: EnvLike,
    *,
    n_envs: int = 1,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    mark_episode_start: bool = False,
) -> TransformedEnv:
    """A TorchRL env ready for CrossQ.

    ``env`` is a gymnasium id (``"Pendulum-v1"``), a gymnasium env, a zero-argument
    factory of one, or a TorchRL ``EnvBase`` (used as is, plus the logging transforms).
    Gymnasium envs become :class:`LeanGymEnv`s, which write the float32 observations and
    the episode statistics themselves; with ``n_envs > 1`` they run in worker processes
    (``ParallelEnv``), which needs an id or a factory. Observations must be vectors (other
    gymnasium spaces are flattened); actions a bounded vector Box. With ``mark_episode_start`` the
    env also writes ``is_init`` (True on the first step of each episode, TorchRL's
    ``InitTracker``), which action noise restarts on.
    """
    if isinstance(env, EnvBase):
        if n_envs != 1:
            raise ValueError("n_envs > 1 needs an env id or a factory, not a built TorchRL env.")
        check_action_spec(env.action_spec_unbatched)
        torchrl_env = _with_crossq_transforms(env, mark_episode_start)
    elif n_envs == 1:
        torchrl_env = LeanGymEnv(_gym_env(env), device=device, mark_episode_start=mark_episode_start)
    else:
        if isinstance(env, gym.Env):
            raise ValueError("n_envs > 1 needs an env id or a factory (each worker builds its own env).")
        factory = functools.partial(_lean_gym_env, env, mark_episode_start)
        torchrl_env = ParallelEnv(n_envs, factory, device=device)
    if seed is not None:
        torchrl_env.set_seed(seed)
    return torchrl_env

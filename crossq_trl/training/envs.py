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
    if not _kept_as_is(env.observation_space):
        # Discrete / MultiDiscrete / MultiBinary become one-hot vectors, images and other Dicts flat vectors.
        env = gym.wrappers.FlattenObservation(env)
    return env


def _kept_as_is(space: gym.Space) -> bool:
    """A vector Box, or a Dict of Boxes: each Dict entry becomes its own observation key (a features extractor
    turns them into one vector, :mod:`crossq_trl.modules.features`)."""
    if isinstance(space, gym.spaces.Dict):
        return all(isinstance(entry, gym.spaces.Box) for entry in space.values())
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


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
    (``ParallelEnv``), which needs an id or a factory. Observations are a vector Box or a Dict of Boxes
    (each entry its own key, e.g. ``observation``, ``achieved_goal`` and ``desired_goal`` of a goal env);
    other gymnasium spaces are flattened into one vector. Actions must be a bounded vector Box. With
    ``mark_episode_start`` the env also writes ``is_init`` (True on the first step of each episode, TorchRL's
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


def goal_compute_reward(env: EnvLike) -> Callable | None:
    """The ``compute_reward(achieved_goal, desired_goal, info)`` of a goal env (the ``GoalEnv`` API of
    gymnasium-robotics, what HER relabels with), or None when the env has none. An id or a factory is built once
    here for it; a TorchRL env is searched for the gymnasium env it wraps (``LeanGymEnv``, ``GymWrapper``)."""
    if isinstance(env, EnvBase):
        while isinstance(env, TransformedEnv):
            env = env.base_env
        env = getattr(env, "_env", None)
        if not isinstance(env, gym.Env):
            return None
    elif not isinstance(env, gym.Env):
        env = _gym_env(env)
    try:
        return env.get_wrapper_attr("compute_reward")
    except AttributeError:
        return None

"""Which vector env an object is, and its TorchRL adapter."""

from __future__ import annotations

from typing import Any

import torch
from torchrl.envs import EnvBase

from crossq_trl.compat.gym_vector_env import GymVectorEnvAdapter, is_gym_vector_env
from crossq_trl.compat.sb3_vec_env import SB3VecEnvAdapter, is_sb3_vec_env
from crossq_trl.compat.vec_env_view import TorchRLVecEnv
from crossq_trl.compat.vector_env import VectorEnvAdapter


def is_vector_env(env: Any) -> bool:
    """Whether ``env`` is a gymnasium ``VectorEnv`` or has sb3's ``VecEnv`` interface."""
    return is_gym_vector_env(env) or is_sb3_vec_env(env)


def to_torchrl_env(env: Any, *, device: torch.device | str = "cpu") -> VectorEnvAdapter:
    """A gymnasium ``VectorEnv`` or sb3 ``VecEnv`` as a TorchRL env of batch size ``[num_envs]``."""
    if is_gym_vector_env(env):
        return GymVectorEnvAdapter(env, device=device)
    if is_sb3_vec_env(env):
        return SB3VecEnvAdapter(env, device=device)
    raise TypeError(f"{type(env).__name__} is neither a gymnasium VectorEnv nor an sb3 VecEnv.")


def env_as_given(env: Any, torchrl_env: EnvBase) -> Any:
    """What ``model.get_env()`` returns for the env a user gave, trained on as ``torchrl_env``: a vector env
    or a TorchRL env itself, and for an id or a gymnasium env a :class:`TorchRLVecEnv` view of ``torchrl_env``
    (sb3 returns the ``DummyVecEnv`` it wrapped such an env in)."""
    return env if is_vector_env(env) or isinstance(env, EnvBase) else TorchRLVecEnv(torchrl_env)

"""Adapters between sb3-style inputs and crossq_trl: vector envs in, the sb3 ``policy`` surface out."""

from crossq_trl.compat.gym_vector_env import GymVectorEnvAdapter, is_gym_vector_env
from crossq_trl.compat.policy import CrossQPolicy
from crossq_trl.compat.sb3_vec_env import SB3VecEnvAdapter, is_sb3_vec_env
from crossq_trl.compat.vec_env_view import TorchRLVecEnv
from crossq_trl.compat.vector_env import VectorEnvAdapter
from crossq_trl.compat.wrap import env_as_given, is_vector_env, to_torchrl_env

__all__ = [
    "CrossQPolicy",
    "GymVectorEnvAdapter",
    "SB3VecEnvAdapter",
    "TorchRLVecEnv",
    "VectorEnvAdapter",
    "env_as_given",
    "is_gym_vector_env",
    "is_sb3_vec_env",
    "is_vector_env",
    "to_torchrl_env",
]

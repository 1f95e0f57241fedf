"""Reading CrossQ's input and output sizes from TorchRL specs, with clear errors."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tensordict.utils import NestedKey
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs import EnvBase


def resolve_specs(
    env: EnvBase | None,
    observation_spec: TensorSpec | None,
    action_spec: TensorSpec | None,
) -> tuple[Composite | TensorSpec, Bounded]:
    """Return ``(observation_spec, action_spec)`` from an env or from explicit specs."""
    if env is not None:
        observation_spec = observation_spec if observation_spec is not None else env.observation_spec
        action_spec = action_spec if action_spec is not None else env.action_spec
    if observation_spec is None or action_spec is None:
        raise ValueError("Pass an env, or both observation_spec and action_spec.")
    # The specs share their batch dims: a Composite's shape, or all but the features of a plain spec.
    batch_dims = observation_spec.ndim if isinstance(observation_spec, Composite) else observation_spec.ndim - 1
    return observation_spec, check_action_spec(action_spec, batch_dims=batch_dims)


def check_vector_action(shape: Sequence[int]) -> None:
    """CrossQ's actions are vectors (its entropy target is ``-dim(A)``, its networks end in ``dim(A)`` units):
    refuse any other action shape, saying how to flatten it."""
    shape = tuple(shape)
    if len(shape) != 1:
        raise ValueError(
            f"CrossQ needs a vector action (a 1-D Box), got action shape {shape}. Flatten it to "
            f"({math.prod(shape)},) and reshape it back in the env, e.g. with a gymnasium.ActionWrapper whose "
            f"action_space is Box(low.flatten(), high.flatten()) and whose action(a) returns a.reshape({shape})."
        )


def check_action_spec(action_spec: TensorSpec, batch_dims: int = 0) -> Bounded:
    """CrossQ squashes a Gaussian into a box: only bounded continuous vector actions work. The first
    ``batch_dims`` dims of the spec are batch (env) dims; ``-1``: all but the last."""
    if isinstance(action_spec, Composite):
        if len(list(action_spec.keys(True, True))) != 1:
            raise ValueError(
                "CrossQ supports a single continuous action tensor; got a Composite action spec "
                f"with keys {list(action_spec.keys(True, True))}."
            )
        action_spec = action_spec[next(iter(action_spec.keys(True, True)))]
    if not isinstance(action_spec, Bounded) or not action_spec.dtype.is_floating_point:
        raise ValueError(
            f"CrossQ needs a continuous, bounded action space (a gymnasium Box / TorchRL Bounded "
            f"spec with float dtype); got {type(action_spec).__name__} with dtype {action_spec.dtype}. "
            "Discrete, MultiDiscrete, MultiBinary and Dict actions are not supported."
        )
    check_vector_action(action_spec.shape[batch_dims:])
    low, high = action_spec.space.low, action_spec.space.high
    if not (low.isfinite().all() and high.isfinite().all()):
        raise ValueError(
            "CrossQ needs finite action bounds to rescale its tanh-squashed actions; got "
            f"low={low.tolist()}, high={high.tolist()}. Clip or rescale the action space first."
        )
    if not (high > low).all():
        raise ValueError(f"Action bounds need high > low; got low={low.tolist()}, high={high.tolist()}.")
    return action_spec


def feature_dim(observation_spec: Composite | TensorSpec, keys: Sequence[NestedKey]) -> int:
    """Total number of features of ``keys``, each a vector ``[*batch, features]``."""
    if not isinstance(observation_spec, Composite):
        if len(keys) != 1:
            raise ValueError(f"A single observation spec was given for {len(keys)} keys {list(keys)}.")
        observation_spec = Composite({keys[0]: observation_spec}, shape=observation_spec.shape[:-1])
    total = 0
    for key in keys:
        if key not in observation_spec.keys(True):
            raise KeyError(
                f"Observation key {key!r} is not in the observation spec (keys: "
                f"{list(observation_spec.keys(True, True))}); pass in_keys matching your env."
            )
        spec = observation_spec[key]
        feature_shape = spec.shape[len(observation_spec.shape) :]
        if isinstance(spec, Composite) or len(feature_shape) != 1:
            raise ValueError(
                f"Observation {key!r} must be a feature vector, got spec shape {tuple(feature_shape)}. "
                "Flatten it first, e.g. with torchrl.envs.FlattenObservation(-k, -1) for a k-dim "
                "observation, or one-hot encode discrete observations."
            )
        total += feature_shape[0]
    return total


# What the logging transforms and LeanGymEnv add to an env's observation spec: not inputs of the networks.
NON_OBSERVATION_KEYS = ("episode_reward", "step_count", "is_init")


def observation_keys(observation_spec: Composite) -> list[NestedKey]:
    """The entries of an env's observation spec that the networks read: ``["observation"]`` for a vector env,
    the Dict's keys for a Dict one (e.g. ``observation``, ``achieved_goal``, ``desired_goal``); the episode
    statistics and ``is_init`` are left out."""
    return [key for key in observation_spec.keys(True, True) if key not in NON_OBSERVATION_KEYS]

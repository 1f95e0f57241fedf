"""The ``action_noise`` option: a noise by name (``"normal_0.1"``, ``"ou_0.2"``), an :class:`ActionNoise`, or
any object with sb3's ``ActionNoise`` protocol, made into the :class:`ActionNoise` of ``n_envs`` envs."""

from __future__ import annotations

from typing import Any

import torch

from crossq_trl.exploration.action_noise import ActionNoise
from crossq_trl.exploration.gaussian import GaussianActionNoise
from crossq_trl.exploration.ornstein_uhlenbeck import OrnsteinUhlenbeckActionNoise
from crossq_trl.exploration.sb3_noise import SB3ActionNoise, has_sb3_noise_protocol

NOISE_NAMES: dict[str, type[ActionNoise]] = {"normal": GaussianActionNoise, "ou": OrnsteinUhlenbeckActionNoise}
NOISE_FORMS = (
    "None, 'normal_<sigma>' or 'ou_<sigma>' (sigma > 0, in units of the half action range), an ActionNoise, "
    "or an object with sb3's ActionNoise protocol (noise() -> np.ndarray, noise.reset())"
)


def parse_noise_name(name: str) -> tuple[type[ActionNoise], float] | None:
    """``"normal_0.1"`` -> ``(GaussianActionNoise, 0.1)``, ``"ou_0.2"`` -> ``(OrnsteinUhlenbeckActionNoise,
    0.2)``; None for any other string."""
    kind, _, sigma = name.partition("_")
    try:
        value = float(sigma)
    except ValueError:
        return None
    return (NOISE_NAMES[kind], value) if kind in NOISE_NAMES and value > 0 else None


def is_action_noise_option(noise: Any) -> bool:
    """Whether ``noise`` is one of the accepted forms (:data:`NOISE_FORMS`)."""
    if isinstance(noise, str):
        return parse_noise_name(noise) is not None
    return noise is None or isinstance(noise, ActionNoise) or has_sb3_noise_protocol(noise)


def make_action_noise(noise: Any, *, action_dim: int, n_envs: int = 1) -> ActionNoise:
    """The :class:`ActionNoise` for an ``action_noise`` option (not None): a name gets zero mean and the same
    sigma on every action dimension (sb3's ``OrnsteinUhlenbeckActionNoise`` defaults for ``"ou"``); an
    :class:`ActionNoise` is used as is; any other object is wrapped by :class:`SB3ActionNoise`."""
    if isinstance(noise, str):
        parsed = parse_noise_name(noise)
        if parsed is None:
            raise ValueError(f"action_noise must be {NOISE_FORMS}; got {noise!r}.")
        noise_class, sigma = parsed
        return noise_class(torch.zeros(action_dim), torch.full((action_dim,), sigma), n_envs=n_envs)
    if isinstance(noise, ActionNoise):
        if (noise.action_dim, noise.n_envs) != (action_dim, n_envs):
            raise ValueError(
                f"action_noise has action_dim={noise.action_dim}, n_envs={noise.n_envs}; this model needs "
                f"action_dim={action_dim}, n_envs={n_envs}: build it with those."
            )
        return noise
    return SB3ActionNoise(noise, action_dim=action_dim, n_envs=n_envs)

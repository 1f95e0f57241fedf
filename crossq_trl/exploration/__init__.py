"""Exploration components: action noise processes with one state per env and the module that adds them to a
policy's action (gSDE, the other exploration option, is the actor head in :mod:`crossq_trl.modules.gsde`)."""

from crossq_trl.exploration.action_noise import ActionNoise
from crossq_trl.exploration.additive_noise import AdditiveActionNoise
from crossq_trl.exploration.factory import make_action_noise
from crossq_trl.exploration.gaussian import GaussianActionNoise
from crossq_trl.exploration.gsde_resampling import GSDERolloutReset
from crossq_trl.exploration.ornstein_uhlenbeck import OrnsteinUhlenbeckActionNoise
from crossq_trl.exploration.sb3_noise import SB3ActionNoise

__all__ = [
    "ActionNoise",
    "AdditiveActionNoise",
    "GSDERolloutReset",
    "GaussianActionNoise",
    "OrnsteinUhlenbeckActionNoise",
    "SB3ActionNoise",
    "make_action_noise",
]

"""The trainer hook that starts a new gSDE rollout after each collected batch."""

from __future__ import annotations

from torch import nn
from torchrl.trainers import Trainer, TrainerHookBase

from crossq_trl.modules.gsde import has_gsde, reset_noise


class GSDERolloutReset(TrainerHookBase):
    """After each collected batch, new gSDE exploration matrices for the next one (:func:`reset_noise`).

    A collector batch of ``train_freq`` steps is sb3's rollout, at whose start sb3 resamples the matrices
    (``sde_sample_freq=-1``) and from which it counts ``sde_sample_freq`` steps. Register it on any TorchRL
    ``Trainer``; in a hand-written loop call ``reset_noise(policy)`` after each batch instead.
    """

    def __init__(self, policy: nn.Module) -> None:
        if not has_gsde(policy):
            raise ValueError(
                f"GSDERolloutReset: {type(policy).__name__} holds no gSDE actor; build it with "
                "make_crossq_actor(..., use_sde=True)."
            )
        self.policy = policy

    def __call__(self) -> None:
        reset_noise(self.policy)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

    def register(self, trainer: Trainer, name: str = "gsde_rollout_reset") -> None:
        trainer.register_op("post_steps", self)

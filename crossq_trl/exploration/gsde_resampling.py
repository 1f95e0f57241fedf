"""The trainer hook that starts a new gSDE rollout after each collected batch."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchrl.trainers import Trainer, TrainerHookBase

from crossq_trl.modules.gsde import has_gsde, reset_noise


class GSDERolloutReset(TrainerHookBase):
    """New gSDE exploration matrices (:func:`reset_noise`) after each rollout, for the next one.

    sb3 resamples the matrices at the start of each rollout (the steps collected between two trainings) and
    counts ``sde_sample_freq`` steps from there. By default every collected batch is a rollout; pass
    ``rollout_ended`` (called after each batch) when a rollout spans several. Register it on any TorchRL
    ``Trainer``; in a hand-written loop call ``reset_noise(policy)`` after each rollout instead.
    """

    def __init__(self, policy: nn.Module, rollout_ended: Callable[[], bool] | None = None) -> None:
        if not has_gsde(policy):
            raise ValueError(
                f"GSDERolloutReset: {type(policy).__name__} holds no gSDE actor; build it with "
                "make_crossq_actor(..., use_sde=True)."
            )
        self.policy, self.rollout_ended = policy, rollout_ended

    def __call__(self) -> None:
        if self.rollout_ended is None or self.rollout_ended():
            reset_noise(self.policy)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

    def register(self, trainer: Trainer, name: str = "gsde_rollout_reset") -> None:
        """Training starts a new rollout (whatever acting happened before, e.g. the collector probing its
        policy); then a new one after each rollout."""
        reset_noise(self.policy)
        trainer.register_op("post_steps", self)

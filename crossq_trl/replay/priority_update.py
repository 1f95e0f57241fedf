"""Priorities back to a prioritized replay buffer after each optimization step of a TorchRL ``Trainer``."""

from __future__ import annotations

from typing import Any

from tensordict import TensorDictBase
from torchrl.data import PrioritizedSampler, TensorDictReplayBuffer
from torchrl.trainers import Trainer, TrainerHookBase


def is_prioritized(replay_buffer: Any) -> bool:
    """Whether ``replay_buffer`` samples by priority (a TorchRL ``PrioritizedSampler``, or a subclass)."""
    return isinstance(getattr(replay_buffer, "_sampler", None), PrioritizedSampler)


class PriorityUpdate(TrainerHookBase):
    """Keeps each replay batch (``process_optim_batch``) and, once the optimization step ran (``post_optim``),
    gives the priorities that the step wrote into it (``CrossQUpdate`` writes ``|TD error|`` at the loss's
    ``tensor_keys.priority``) to ``replay_buffer.update_tensordict_priority``.

    TorchRL's ``ReplayBufferTrainer`` does this at ``post_loss``, a stage that a Trainer with an
    ``OptimizationStepper`` (as :class:`~crossq_trl.CrossQTrainer`) does not run.
    """

    def __init__(self, replay_buffer: TensorDictReplayBuffer) -> None:
        self.replay_buffer = replay_buffer
        self._batch: TensorDictBase | None = None

    def keep(self, batch: TensorDictBase) -> TensorDictBase:
        self._batch = batch
        return batch

    def update(self) -> None:
        if self._batch is not None:
            self.replay_buffer.update_tensordict_priority(self._batch)
            self._batch = None

    def register(self, trainer: Trainer, name: str = "priority_update") -> None:
        trainer.register_op("process_optim_batch", self.keep)
        trainer.register_op("post_optim", self.update)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the priorities are the sampler's state, saved with the replay buffer

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

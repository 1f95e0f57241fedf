"""Pushing the learner's acting weights to remote collector workers every K updates."""

from __future__ import annotations

from tensordict import TensorDict
from torch import nn
from torchrl.collectors import BaseCollector
from torchrl.trainers import Trainer, TrainerHookBase


class PolicyWeightPush(TrainerHookBase):
    """Sends the collector's policy weights (parameters and buffers: the Batch Renormalization running statistics
    travel with them) to its workers once before collection starts, then after every ``interval`` updates.

    TorchRL's :class:`~torchrl.trainers.UpdateWeights` counts collected batches; CrossQ's schedule runs a varying
    number of updates per batch (``gradient_steps=-1``, ``(n, "episode")``, none during warm-up), and how stale the
    workers' policy is depends on the updates, so this hook counts those (``trainer.update.num_updates``, a Python
    int: no device sync). The transport is the collector's own weight-sync scheme (``update_policy_weights_()``).
    ``pushes`` counts the sends; ``pushed_at`` is the update count of the last one.

    ``source``: the learner's module, when the collector holds a copy of it rather than the module itself (a GPU
    learner hands CPU workers a CPU copy, since CUDA tensors cannot be unpickled where there is no GPU); its weights
    are copied into the collector's policy before each push.
    """

    def __init__(self, collector: BaseCollector, interval: int = 1, source: nn.Module | None = None) -> None:
        if interval < 1:
            raise ValueError(f"weight_sync_interval must be an integer >= 1, got {interval!r}.")
        self.collector, self.interval = collector, interval
        self._copy = None
        if source is not None:
            self._copy = (TensorDict.from_module(source).data, TensorDict.from_module(collector.policy).data)
        self.pushes = 0
        self.pushed_at: int | None = None
        self._trainer: Trainer | None = None

    def push(self) -> None:
        if self._copy is not None:
            learner, copy = self._copy
            copy.update_(learner)
        self.collector.update_policy_weights_()
        self.pushes += 1
        self.pushed_at = self._trainer.update.num_updates

    def _setup(self) -> None:
        self.push()  # the workers start from the learner's weights (also those of a resumed checkpoint)

    def __call__(self) -> None:
        if self._trainer.update.num_updates - self.pushed_at >= self.interval:
            self.push()

    def register(self, trainer: Trainer, name: str = "policy_weight_push") -> None:
        self._trainer = trainer
        trainer.register_op("setup", self._setup)
        trainer.register_op("post_steps", self)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

"""TorchRL's prioritized sampler on priority trees that need no compiled extension."""

from __future__ import annotations

import torch
from torchrl.data import PrioritizedSampler

from crossq_trl.replay.segment_tree import MinSegmentTree, SumSegmentTree


class TensorPrioritizedSampler(PrioritizedSampler):
    """:class:`torchrl.data.PrioritizedSampler` (Schaul et al. 2016; same arguments: ``max_capacity``,
    ``alpha``, ``beta``, ``eps``, ...), its sum and min trees held in torch tensors
    (:mod:`crossq_trl.replay.segment_tree`) instead of TorchRL's C++ extension, which does not load with
    every torch build. Sampling, importance weights, priority updates and ``state_dict`` are TorchRL's own:
    ``P(i) = (p_i + eps)^alpha / sum_j (p_j + eps)^alpha``, weights ``(P(i) / min_j P(j))^-beta`` (the
    largest is 1), new transitions at the highest priority seen so far.
    """

    def _init(self) -> None:
        if self._device is not None and self._device.type != "cpu":
            raise ValueError(f"TensorPrioritizedSampler keeps its trees on the CPU, got device={self._device}.")
        dtype = torch.float64 if self.dtype in (torch.double, torch.float64) else torch.float32
        self._sum_tree = SumSegmentTree(self._max_capacity, dtype)
        self._min_tree = MinSegmentTree(self._max_capacity, dtype)
        self._max_priority = None

    def _tree_device_from_storage(self, storage) -> None:
        return None  # the trees stay on the CPU whatever the storage's device

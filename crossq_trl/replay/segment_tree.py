"""Sum and min segment trees in torch tensors, with the interface of TorchRL's C++ trees.

TorchRL's :class:`~torchrl.data.PrioritizedSampler` keeps its priorities in ``SumSegmentTree`` /
``MinSegmentTree`` objects from its C++ extension, ``torchrl._torchrl``. That extension is compiled against one
torch version and does not load with another (the torchrl 0.14.1 wheel and torch 2.13 of this project: an
undefined symbol), and the sampler then cannot be built at all. These trees do the same in plain tensors,
vectorized over the batch: ``O(log N)`` tensor operations per batch of updates or samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class _SegmentTree:
    """A complete binary tree over ``size`` leaves in one tensor: node 1 is the root, node ``k`` has the
    children ``2k`` and ``2k + 1``, and the leaves are the nodes ``capacity .. capacity + size - 1`` (the
    layout of TorchRL's C++ tree). Unwritten leaves hold the identity element of the operation."""

    def __init__(self, size: int, identity: float, dtype: torch.dtype = torch.float64) -> None:
        if size < 1:
            raise ValueError(f"A segment tree needs size >= 1, got {size}.")
        self.size = size
        self.depth = max(1, math.ceil(math.log2(size + 1)))
        self.capacity = 1 << self.depth  # as the C++ tree: the first power of 2 above size
        self.identity = identity
        self.values = torch.full((2 * self.capacity,), identity, dtype=dtype)

    def _combine(self, children: Tensor) -> Tensor:
        """The value of nodes from their children, ``[nodes, 2]``."""
        raise NotImplementedError

    def __getitem__(self, index) -> Tensor:
        return self.values[torch.as_tensor(index, dtype=torch.long) + self.capacity]

    def __setitem__(self, index, value) -> None:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        value = torch.as_tensor(value, dtype=self.values.dtype).reshape(-1).expand(index.shape)
        if index.numel() > 1:  # a repeated index keeps its last value (the C++ tree writes them in order)
            unique, inverse = torch.unique(index, return_inverse=True)
            if unique.numel() < index.numel():
                position = torch.arange(len(index))
                last = torch.zeros_like(unique).scatter_reduce_(0, inverse, position, "amax", include_self=False)
                index, value = unique, value[last]
        nodes = index + self.capacity
        self.values[nodes] = value
        children = self.values.view(-1, 2)  # row k: the children 2k and 2k + 1 of node k
        for _ in range(self.depth):  # every node of a level at once, up to the root (a repeated parent gets the
            nodes = nodes // 2  # same value each time)
            self.values[nodes] = self._combine(children[nodes])

    def query(self, start: int, end: int) -> float:
        """The operation over the leaves ``start .. end - 1`` (the nodes that cover that range, as the C++ tree)."""
        if start <= 0 and end >= self.size:
            return self.values[1].item()
        nodes, lo, hi = [], max(start, 0) | self.capacity, min(end, self.size) | self.capacity
        while lo < hi:
            if lo & 1:
                nodes.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                nodes.append(hi)
            lo, hi = lo >> 1, hi >> 1
        return self._reduce(self.values[nodes]).item() if nodes else self.identity

    def _reduce(self, values: Tensor) -> Tensor:
        raise NotImplementedError


class SumSegmentTree(_SegmentTree):
    """Sums over ranges of leaves, and the inverse of the prefix sum (:meth:`scan_lower_bound`)."""

    def __init__(self, size: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(size, 0.0, dtype)

    def _combine(self, children: Tensor) -> Tensor:
        return children.sum(1)

    def _reduce(self, values: Tensor) -> Tensor:
        return values.sum()

    def scan_lower_bound(self, value) -> Tensor:
        """For each ``value``, the first leaf whose prefix sum (itself included) is >= ``value`` (``size`` when
        ``value`` exceeds the total), descending from the root as the C++ tree does."""
        value = torch.as_tensor(value, dtype=self.values.dtype).clone()
        beyond = value > self.values[1]
        node = torch.ones(value.shape, dtype=torch.long)
        for _ in range(self.depth):
            node = 2 * node
            left = self.values[node]
            right = value > left
            value = torch.where(right, value - left, value)
            node = node + right
        return torch.where(beyond, self.size, node - self.capacity)


class MinSegmentTree(_SegmentTree):
    """Minima over ranges of leaves."""

    def __init__(self, size: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(size, math.inf, dtype)

    def _combine(self, children: Tensor) -> Tensor:
        return children.amin(1)

    def _reduce(self, values: Tensor) -> Tensor:
        return values.min()

"""A replay storage that keeps each observation once (sb3's ``optimize_memory_usage``), exact at episode ends."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import Tensor
from torchrl.data import LazyTensorStorage


class MemoryOptimizedStorage(LazyTensorStorage):
    """A :class:`~torchrl.data.LazyTensorStorage` of transitions that does not store ``("next", obs)``.

    Transitions are written time-major, ``stride`` (the number of envs) per env step, so the observation after
    slot ``i`` is, as a rule, the observation stored ``stride`` slots on: that slot's ``obs`` is read back as
    slot ``i``'s ``("next", obs)`` (sb3's ``optimize_memory_usage``, which also wraps around the circular
    buffer). Where that does not hold, the next observation goes to a small pool of spare rows:

    - at an episode's end (termination or truncation), the successor slot holds the first observation of the
      next episode, and the final one is kept (sb3 loses it: it is overwritten by the reset observation);
    - for the newest ``stride`` transitions, whose successors are not written yet (their spare row is freed
      once the successor arrives with the same observation);
    - before a slot is overwritten, its predecessor's next observation is moved to the pool if it differs
      from the new one (the oldest transition of a full buffer, whose successor is the newest).

    These rules compare values, so every sampled transition equals the one written whatever the write order;
    the order only decides how much is saved (about half the observation memory when written time-major, the
    pool then holding one row per episode end). Observation entries are the leaves ``key`` for which the data
    also holds ``("next", key)``; sampling and ``get`` return the full transitions.

    Args:
        max_size: capacity in transitions, a multiple of ``stride``.
        stride: transitions per env step (the number of envs).
        device: where the transitions are stored.
    """

    def __init__(self, max_size: int, *, stride: int = 1, device: torch.device | str = "cpu") -> None:
        if stride < 1 or max_size % stride:
            raise ValueError(
                f"MemoryOptimizedStorage needs max_size ({max_size}) to be a multiple of stride ({stride}): one "
                "slot per env and env step, so that an env's next step is always stride slots on."
            )
        super().__init__(max_size, device=device)
        self.stride = stride
        self._reset_spare()

    def _reset_spare(self) -> None:
        self.observation_keys: list | None = None
        self._spare_row: Tensor | None = None  # per slot: its next observation's row in the pool, -1: the successor's
        self._spare: dict | None = None  # the pool of next observations, a tensor per observation key
        self._free = torch.empty(0, dtype=torch.long)  # a stack of free pool rows
        self._num_free = 0

    # Observations travel as {key: tensor} dicts below: indexing TensorDicts costs ~10x more per call, on the
    # path of every collected step and sampled batch.

    # --- writing -----------------------------------------------------------------------------------------------

    def set(self, cursor, data: TensorDictBase, *, set_cursor: bool = True) -> None:
        if not isinstance(data, TensorDictBase) or data.ndim != 1:
            raise ValueError("MemoryOptimizedStorage stores TensorDicts of transitions with one batch dimension.")
        slots = self._slots(cursor, data.shape[0])
        unique, inverse = torch.unique(slots, return_inverse=True)
        if unique.numel() < slots.numel():  # more rows than slots: only the last write to a slot stays
            last = torch.zeros_like(unique).scatter_reduce_(0, inverse, torch.arange(len(slots)), "amax")
            kept = last.sort().values
            return self.set(slots[kept], data[kept], set_cursor=set_cursor)
        if self.observation_keys is None:
            present = data.keys(include_nested=True, leaves_only=True)
            self.observation_keys = [
                key for key in present if _as_tuple(key)[0] != "next" and ("next", *_as_tuple(key)) in present
            ]
            if not self.observation_keys:
                raise ValueError("MemoryOptimizedStorage needs transitions with an entry at key and at ('next', key).")
        next_keys = {key: ("next", *_as_tuple(key)) for key in self.observation_keys}
        next_observations = {key: data.get(next_key) for key, next_key in next_keys.items()}
        compact = data.exclude(*next_keys.values())
        if self._spare_row is not None:
            self._keep_predecessors_next(slots, {key: compact.get(key) for key in self.observation_keys})
            self._release(slots)
        super().set(cursor, compact, set_cursor=set_cursor)
        if self._spare_row is None:
            self._spare_row = torch.full((self.max_size,), -1, dtype=torch.int32)
            self._spare = {key: value[:0].clone() for key, value in next_observations.items()}
        successors = (slots + self.stride) % self.max_size
        written = (successors < len(self)) | torch.isin(successors, slots)
        derived = written & _rows_equal(self._observations(successors), next_observations)
        self._store_spare(slots[~derived], _rows(next_observations, ~derived))

    def _keep_predecessors_next(self, slots: Tensor, new_observations: dict) -> None:
        """For the stored transitions just before ``slots`` (not rewritten now): a next observation read from a
        slot about to change moves to the pool; one in the pool that the new observation repeats leaves it."""
        predecessors = (slots - self.stride) % self.max_size
        outside = (predecessors < len(self)) & ~torch.isin(predecessors, slots)
        if not outside.any():
            return
        predecessors, new_observations = predecessors[outside], _rows(new_observations, outside)
        old_observations = self._observations(slots[outside])
        row = self._spare_row[predecessors].long()
        pooled = row >= 0
        moved = ~pooled & ~_rows_equal(old_observations, new_observations)
        self._store_spare(predecessors[moved], _rows(old_observations, moved))
        repeated = pooled & _rows_equal(_rows(self._spare, row.clamp_min(0)), new_observations)
        self._release(predecessors[repeated])

    def _observations(self, slots: Tensor) -> dict:
        """The observations stored at ``slots`` (copies)."""
        return {key: self._storage.get(key)[slots] for key in self.observation_keys}

    def _store_spare(self, slots: Tensor, values: dict) -> None:
        count = slots.numel()
        if count == 0:
            return
        if self._num_free < count:
            self._grow_pool(count)
        rows = self._free[self._num_free - count : self._num_free].clone()
        self._num_free -= count
        for key, value in values.items():
            self._spare[key][rows] = value
        self._spare_row[slots] = rows.to(torch.int32)

    def _release(self, slots: Tensor) -> None:
        rows = self._spare_row[slots].long()
        rows = rows[rows >= 0]
        self._free[self._num_free : self._num_free + rows.numel()] = rows
        self._num_free += rows.numel()
        self._spare_row[slots] = -1

    def _grow_pool(self, needed: int) -> None:
        """At least ``needed`` more free rows: the pool doubles (or grows by ``needed``)."""
        old = self._spare_row_count()
        new = max(2 * old, old + needed, 64)
        for key, value in self._spare.items():
            self._spare[key] = torch.cat([value, value.new_zeros((new - old, *value.shape[1:]))])
        free = torch.empty(new, dtype=torch.long)
        free[: self._num_free] = self._free[: self._num_free]
        free[self._num_free : self._num_free + new - old] = torch.arange(old, new)
        self._free, self._num_free = free, self._num_free + new - old

    def _spare_row_count(self) -> int:
        return next(iter(self._spare.values())).shape[0]

    # --- reading -----------------------------------------------------------------------------------------------

    def get(self, index) -> TensorDictBase:
        if isinstance(index, int):
            return self.get(torch.tensor([index]))[0]
        transitions = super().get(index).clone(recurse=False)  # may be a view of the storage: add no key to it
        slots = self._slots(index, len(self), relative_to_length=True)
        next_observations = self._observations((slots + self.stride) % self.max_size)
        row = self._spare_row[slots].long()
        pooled = row >= 0
        for key, value in next_observations.items():
            if pooled.any():
                value[pooled] = self._spare[key][row[pooled]]
            transitions.set(("next", *_as_tuple(key)), value)
        return transitions

    def _slots(self, index, count: int, *, relative_to_length: bool = False) -> Tensor:
        """``index`` (an int, a slice or indices, as TorchRL's writers and samplers pass them) as slot numbers."""
        if isinstance(index, slice):
            return torch.arange(count if relative_to_length else self.max_size)[index]
        return torch.as_tensor(index, dtype=torch.long).reshape(-1) % self.max_size

    # --- state -------------------------------------------------------------------------------------------------

    def _empty(self) -> None:
        super()._empty()
        self._reset_spare()

    def nbytes(self) -> int:
        """Bytes held by the stored transitions, the pool and its bookkeeping."""
        tensors = [] if self._storage is None else list(self._storage.values(True, True))
        if self._spare is not None:
            tensors += [*self._spare.values(), self._spare_row, self._free]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "observation_keys": self.observation_keys,
            "spare_row": self._spare_row,
            "spare": None if self._spare is None else {key: value.clone() for key, value in self._spare.items()},
            "free": self._free[: self._num_free].clone(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.observation_keys = state_dict["observation_keys"]
        self._spare_row = state_dict["spare_row"]
        spare = state_dict["spare"]
        self._spare = None if spare is None else {key: value.clone() for key, value in spare.items()}
        self._free = state_dict["free"].clone()
        self._num_free = self._free.numel()
        if self._spare is not None:  # room on the stack for every pool row
            room = torch.empty(self._spare_row_count() - self._num_free, dtype=torch.long)
            self._free = torch.cat([self._free, room])


def _rows(values: dict, index: Tensor) -> dict:
    return {key: value[index] for key, value in values.items()}


def _rows_equal(a: dict, b: dict) -> Tensor:
    """Per row of two {key: tensor} dicts with the same keys: whether every entry is equal."""
    equal = None
    for key, value in a.items():
        rows = (value == b[key]).reshape(value.shape[0], -1).all(-1)
        equal = rows if equal is None else equal & rows
    return equal


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)

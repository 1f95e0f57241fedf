"""Many tensors in one contiguous buffer, each kept as a view of it.

A compiled step pays per input tensor (its guard, its wrapper code, every kernel argument), and
one element-wise kernel over a flat buffer beats one per tensor. The modules and optimizers keep
their own tensor objects (``param.data`` and ``optimizer.state`` entries become views), so they
still read, save and load as usual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class FlatTensors:
    """``tensors`` (one dtype and device) moved into one flat buffer, ``flat``, as views of it.

    ``tensors`` are the very objects the rest of the program holds (parameters, buffers,
    optimizer state): their ``.data`` is pointed at their slice of ``flat``, so writes to
    either are seen by both. :meth:`views` rebuilds the same views from any tensor shaped
    like ``flat`` (inside a traced function, for instance).
    """

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        if not tensors:
            raise ValueError("FlatTensors needs at least one tensor.")
        kinds = {(t.dtype, t.device) for t in tensors}
        if len(kinds) != 1:
            raise ValueError(f"FlatTensors needs tensors of one dtype and device, got {sorted(map(str, kinds))}.")
        self.shapes = [t.shape for t in tensors]
        self.numels = [math.prod(shape) for shape in self.shapes]
        with torch.no_grad():
            self.flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        views = self.views(self.flat)
        for tensor, view in zip(tensors, views, strict=True):
            tensor.data = view
        self._addresses = tuple(view.data_ptr() for view in views)

    def views(self, flat: Tensor) -> list[Tensor]:
        """The tensors' views of ``flat`` (or of anything shaped like it)."""
        return [part.view(shape) for part, shape in zip(flat.split(self.numels), self.shapes, strict=True)]

    def holds(self, tensors: Sequence[Tensor]) -> bool:
        """Whether ``tensors`` still live in ``flat``: false once they were moved (``module.to``) or replaced
        (``optimizer.load_state_dict``), after which a new :class:`FlatTensors` must take them in."""
        return tuple(map(Tensor.data_ptr, tensors)) == self._addresses  # checked every update: kept lean

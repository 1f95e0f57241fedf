"""Explicit train/eval mode for one pass through a module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def training_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run the block with ``module`` and all its submodules in train (or eval) mode.

    Every submodule gets its previous mode back on exit, so a pass can pick the
    Batch Renormalization mode it needs without leaking it to the caller. Only the
    submodules in the other mode are touched. Safe to use inside
    ``torch.compile(fullgraph=True)``.
    """
    switched = [submodule for submodule in module.modules() if submodule.training != training]
    for submodule in switched:
        submodule.training = training
    try:
        yield module
    finally:
        for submodule in switched:
            submodule.training = not training

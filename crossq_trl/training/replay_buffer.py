"""The CrossQ replay buffer: uniform sampling with replacement, in memory or memory-mapped."""

from __future__ import annotations

import tempfile

from torchrl.data import LazyMemmapStorage, LazyTensorStorage, RandomSampler, TensorDictReplayBuffer


def make_replay_buffer(
    buffer_size: int,
    batch_size: int,
    *,
    storage: str = "memory",
    scratch_dir: str | None = None,
) -> TensorDictReplayBuffer:
    """A ``TensorDictReplayBuffer`` of ``buffer_size`` transitions sampling ``batch_size``.

    ``storage="memmap"`` keeps the transitions in memory-mapped files under
    ``scratch_dir`` (a fresh temp dir when None), for 1M-transition buffers that
    should not sit in RAM.
    """
    if storage == "memory":
        backend = LazyTensorStorage(buffer_size)
    elif storage == "memmap":
        backend = LazyMemmapStorage(buffer_size, scratch_dir=scratch_dir or tempfile.mkdtemp(prefix="crossq_rb_"))
    else:
        raise ValueError(f"storage must be 'memory' or 'memmap', got {storage!r}.")
    return TensorDictReplayBuffer(storage=backend, sampler=RandomSampler(), batch_size=batch_size)

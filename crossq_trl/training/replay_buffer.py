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


def replay_buffer_state(replay_buffer: TensorDictReplayBuffer) -> dict:
    """The stored transitions (only the filled part, not the whole capacity) and the write cursor."""
    return {
        "transitions": replay_buffer[:].clone() if len(replay_buffer) else None,
        "writer": replay_buffer._writer.state_dict(),
    }


def load_replay_buffer_state(replay_buffer: TensorDictReplayBuffer, state: dict) -> None:
    """Refill an empty buffer from :func:`replay_buffer_state`, slot for slot."""
    if len(replay_buffer):
        raise ValueError("load_replay_buffer_state needs an empty replay buffer.")
    if state["transitions"] is not None:
        if state["transitions"].shape[0] > replay_buffer._storage.max_size:
            raise ValueError(
                f"The saved buffer holds {state['transitions'].shape[0]} transitions, more than this buffer's "
                f"capacity {replay_buffer._storage.max_size}; build the model with a larger buffer_size."
            )
        replay_buffer.extend(state["transitions"])
    replay_buffer._writer.load_state_dict(state["writer"])

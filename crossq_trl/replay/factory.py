"""``build_replay_buffer``: sb3's ``replay_buffer_class`` / ``replay_buffer_kwargs`` / ``optimize_memory_usage``
turned into a TorchRL replay buffer."""

from __future__ import annotations

import inspect
from typing import Any

from torchrl.data import (
    PrioritizedSampler,
    RandomSampler,
    ReplayBuffer,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)
from torchrl.data.replay_buffers import Sampler

from crossq_trl.replay.memory_optimized import MemoryOptimizedStorage
from crossq_trl.replay.prioritized_sampler import TensorPrioritizedSampler
from crossq_trl.training.replay_buffer import CrossQReplayBuffer, make_storage

# TorchRL's prioritized sampler needs TorchRL's C++ extension, which loads only with the torch it was built for;
# TensorPrioritizedSampler is the same sampler on torch-tensor trees (same arguments, samples and state).
_PRIORITIZED = {PrioritizedSampler: TensorPrioritizedSampler}


def build_replay_buffer(
    replay_buffer_class: type | None = None,
    replay_buffer_kwargs: dict[str, Any] | None = None,
    *,
    buffer_size: int,
    batch_size: int,
    storage: str = "memory",
    scratch_dir: str | None = None,
    optimize_memory_usage: bool = False,
    n_steps: int = 1,
    gamma: float = 0.99,
    n_envs: int = 1,
    priority_key: str = "td_error",
) -> TensorDictReplayBuffer:
    """The replay buffer a CrossQ run samples from: ``buffer_size`` transitions, batches of ``batch_size``.

    ``replay_buffer_class`` is one of:

    - ``None``: the uniform :class:`~crossq_trl.training.replay_buffer.CrossQReplayBuffer` (its fast path);
    - a TorchRL ``Sampler`` class, built with ``replay_buffer_kwargs`` (and ``max_capacity=buffer_size`` if it
      takes one), e.g. ``PrioritizedSampler`` with ``alpha``, ``beta``, ``eps``;
    - ``TensorDictPrioritizedReplayBuffer``: the same buffer, a ``CrossQReplayBuffer`` with a prioritized
      sampler of its ``alpha``, ``beta``, ``eps``, ``reduction`` (its other keywords go to the buffer);
    - any other ``TensorDictReplayBuffer`` subclass, built with ``storage=``, ``batch_size=``,
      ``priority_key=`` and ``replay_buffer_kwargs``.

    ``PrioritizedSampler`` is built as :class:`~crossq_trl.replay.TensorPrioritizedSampler` (TorchRL's sampler
    without its C++ extension). ``priority_key`` is where the buffer reads the priorities
    (``CrossQLoss.tensor_keys.priority``). ``storage`` is ``"memory"`` or ``"memmap"`` (files in ``scratch_dir``);
    ``optimize_memory_usage=True`` keeps each observation once (:class:`~crossq_trl.replay.MemoryOptimizedStorage`,
    in memory; ``buffer_size`` is rounded down to a multiple of ``n_envs``, as sb3 does). ``n_steps > 1``
    (discount ``gamma``; ``n_envs`` transitions per env step) needs the uniform buffer on a plain storage.
    """
    kwargs = dict(replay_buffer_kwargs or {})
    backend = _storage(buffer_size, storage, scratch_dir, optimize_memory_usage, n_envs)
    n_step = {"n_steps": n_steps, "gamma": gamma, "n_envs": n_envs}
    buffer_class, sampler = CrossQReplayBuffer, RandomSampler()
    if replay_buffer_class is None:
        if kwargs:
            raise ValueError(
                f"replay_buffer_kwargs {sorted(kwargs)} need a replay_buffer_class (the default buffer takes none; "
                "sb3's handle_timeout_termination is always on here: truncation and termination are kept apart)."
            )
    elif not isinstance(replay_buffer_class, type):
        raise TypeError(
            f"replay_buffer_class must be a class (a TorchRL Sampler or replay buffer), got {replay_buffer_class!r}."
        )
    elif issubclass(replay_buffer_class, Sampler):
        sampler, kwargs = _sampler(replay_buffer_class, kwargs, backend.max_size), {}
    elif replay_buffer_class is TensorDictPrioritizedReplayBuffer:
        prioritized = {name: kwargs.pop(name) for name in ("alpha", "beta", "eps", "reduction") if name in kwargs}
        sampler = _sampler(PrioritizedSampler, prioritized, backend.max_size)
    elif issubclass(replay_buffer_class, TensorDictReplayBuffer):
        buffer_class, sampler = replay_buffer_class, kwargs.pop("sampler", sampler)
    else:
        fix = "a TensorDictReplayBuffer subclass or a Sampler class such as torchrl.data.PrioritizedSampler"
        kind = "a replay buffer of other data than TensorDicts"
        kind = kind if issubclass(replay_buffer_class, ReplayBuffer) else "neither a Sampler nor a replay buffer"
        raise TypeError(f"replay_buffer_class={replay_buffer_class.__name__} is {kind}; pass {fix}.")
    if n_steps > 1 and (type(sampler) is not RandomSampler or isinstance(backend, MemoryOptimizedStorage)):
        raise ValueError(
            "n_steps > 1 samples n-step transitions from the uniform replay buffer on a plain storage; drop "
            "replay_buffer_class / optimize_memory_usage, or use n_steps=1."
        )
    if not issubclass(buffer_class, CrossQReplayBuffer):
        if n_steps > 1:
            raise ValueError(f"n_steps > 1 needs a CrossQReplayBuffer, not {buffer_class.__name__}.")
        n_step = {}
    return buffer_class(
        storage=backend, sampler=sampler, batch_size=batch_size, **{"priority_key": priority_key, **n_step, **kwargs}
    )


def _storage(buffer_size: int, storage: str, scratch_dir: str | None, optimize_memory_usage: bool, n_envs: int):
    if not optimize_memory_usage:
        return make_storage(buffer_size, storage=storage, scratch_dir=scratch_dir)
    if storage != "memory":
        raise ValueError(
            f"optimize_memory_usage=True keeps the transitions in memory; use storage='memory', not {storage!r}."
        )
    if buffer_size < n_envs:
        raise ValueError(f"optimize_memory_usage=True needs buffer_size >= n_envs, got {buffer_size} < {n_envs}.")
    return MemoryOptimizedStorage(buffer_size - buffer_size % n_envs, stride=n_envs)


def _sampler(sampler_class: type[Sampler], kwargs: dict[str, Any], capacity: int) -> Sampler:
    sampler_class = _PRIORITIZED.get(sampler_class, sampler_class)
    if "max_capacity" in inspect.signature(sampler_class.__init__).parameters:
        kwargs = {"max_capacity": capacity, **kwargs}
    try:
        return sampler_class(**kwargs)
    except TypeError as err:
        raise TypeError(f"replay_buffer_kwargs do not fit {sampler_class.__name__}: {err}") from err

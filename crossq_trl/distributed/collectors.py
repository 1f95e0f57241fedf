"""Collection on many workers, with TorchRL's own distributed collectors.

``backend="ray"``: :class:`~torchrl.collectors.distributed.RayCollector`, one remote
collector (one env, one eager copy of the acting policy) per Ray actor, anywhere on a Ray
cluster. ``backend="multiprocess"``: :class:`~torchrl.collectors.MultiSyncCollector`, one
worker process per env on this machine. Both are synchronous: each batch holds
``frames_per_worker`` steps of every worker, ``[workers, time]``, like ``n_envs`` parallel
envs, so sb3's ``train_freq`` / ``gradient_steps`` keep their meaning with workers as envs.
The learner (update, replay buffer) stays in the calling process; the policy's weights
reach the workers only through ``collector.update_policy_weights_()`` (see
:mod:`crossq_trl.distributed.weight_sync`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.collectors.distributed import RayCollector  # importable without Ray; it checks at construction
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from crossq_trl.training.collector import CrossQCollector
from crossq_trl.training.envs import make_env
from crossq_trl.training.faults import EnvStepError

BACKENDS = ("ray", "multiprocess")
RAY_MISSING = "collector_backend='ray' needs Ray: pip install 'crossq-trl[ray]' (or use 'multiprocess' on one machine)."


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def worker_env(env_id: str, seed: int) -> EnvBase:
    """A worker's env, built in the worker's process. It also seeds that process's torch RNG (the acting noise):
    every fresh process starts from the same default torch seed, so unseeded workers would draw the same noise."""
    torch.manual_seed(seed)
    return make_env(env_id, seed=seed)


def worker_seeds(seed: int | None, num_workers: int) -> list[int]:
    """One seed per worker; without a seed, drawn from this process's torch RNG (so a seeded run stays seeded)."""
    base = int(torch.randint(2**31 - num_workers, ())) if seed is None else seed
    return [base + worker for worker in range(num_workers)]


def _as_env_step_error(err: Exception, backend: str) -> EnvStepError:
    return EnvStepError(
        f"A {backend} collector worker failed ({type(err).__name__}: {err}). Training stops (a lost worker is not "
        "replaced); resuming from the checkpoint starts a new set of workers."
    )


class _WorkerFailures:
    """Maps an exception of a worker (a dead Ray actor or process, or an env error inside it) to
    :class:`~crossq_trl.training.faults.EnvStepError`, the error on which the trainer checkpoints the learner's
    state before stopping."""

    backend = ""

    def iterator(self) -> Iterator[TensorDictBase]:
        try:
            yield from super().iterator()
        except EnvStepError:
            raise
        except Exception as err:
            raise _as_env_step_error(err, self.backend) from err

    def update_policy_weights_(self, *args, **kwargs) -> None:
        try:
            super().update_policy_weights_(*args, **kwargs)
        except Exception as err:
            raise _as_env_step_error(err, self.backend) from err


class CrossQRayCollector(_WorkerFailures, RayCollector):
    """TorchRL's :class:`~torchrl.collectors.distributed.RayCollector` whose worker failures (a killed actor, a
    lost node, an env error) stop training with :class:`~crossq_trl.training.faults.EnvStepError`."""

    backend = "ray"

    def __init__(self, *args, **kwargs) -> None:
        if not ray_available():
            raise ImportError(RAY_MISSING)
        super().__init__(*args, **kwargs)


class CrossQMultiSyncCollector(_WorkerFailures, MultiSyncCollector):
    """TorchRL's :class:`~torchrl.collectors.MultiSyncCollector` whose worker failures stop training with
    :class:`~crossq_trl.training.faults.EnvStepError`. ``init_random_frames`` is the total over all workers (TorchRL
    gives each worker the whole count; here each gets its share, as :class:`RayCollector` does)."""

    backend = "multiprocess"

    def __init__(self, *args, init_random_frames: int = 0, **kwargs) -> None:
        num_workers = len(args[0]) if args else len(kwargs["create_env_fn"])
        super().__init__(*args, init_random_frames=init_random_frames // num_workers, **kwargs)
        self.init_random_frames = init_random_frames  # what the trainer waits for before updating


def make_distributed_collector(
    env_id: str,
    policy: TensorDictModuleBase,
    *,
    backend: str = "ray",
    num_workers: int = 2,
    frames_per_worker: int = 1,
    total_frames: int = -1,
    init_random_frames: int = 0,
    seed: int | None = None,
    ray_address: str | None = None,
    worker_cpus: float = 1.0,
) -> CrossQMultiSyncCollector | CrossQRayCollector:
    """A synchronous collector of ``num_workers`` workers, each stepping one ``env_id`` env with ``policy``.

    ``policy`` is sent to the workers as is (pickled), so it must be an uncompiled module, e.g.
    ``ActingPolicy(actor)`` (its compiled form holds compiled functions, which do not pickle); it stays the
    learner-side module whose weights (parameters and buffers, so the BRN running statistics too)
    ``update_policy_weights_()`` sends. Each batch is ``[num_workers, frames_per_worker]``; the first
    ``init_random_frames`` frames (in total) use uniform random actions. Worker ``i``'s env and torch RNG are seeded
    with ``seed + i``. With Ray, ``ray_address`` is the cluster to join (``None``: the running Ray session if
    any, else a local one) and each worker reserves ``worker_cpus`` CPUs. A worker failure raises
    :class:`~crossq_trl.training.faults.EnvStepError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"collector_backend must be one of {BACKENDS}, got {backend!r}.")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    if ray_address is not None and backend != "ray":
        raise ValueError("ray_address needs collector_backend='ray'.")
    env_fns = [functools.partial(worker_env, env_id, worker_seed) for worker_seed in worker_seeds(seed, num_workers)]
    common: dict[str, Any] = {
        "frames_per_batch": num_workers * frames_per_worker,
        "total_frames": total_frames,
        "init_random_frames": init_random_frames,
        "exploration_type": ExplorationType.RANDOM,
        "device": "cpu",
        "storing_device": "cpu",
    }
    if backend == "multiprocess":
        # Workers run TorchRL's generic Collector: the multi-process runner needs its trajectory ids.
        return CrossQMultiSyncCollector(
            env_fns,
            policy,
            collector_class=Collector,
            cat_results="stack",
            auto_register_policy_transforms=False,
            **common,
        )
    return CrossQRayCollector(
        env_fns,
        policy,
        collector_class=CrossQCollector,
        # one env per worker: CrossQCollector's lean loop, batches of frames_per_worker steps from the start
        collector_kwargs={"random_frames_per_batch": 1, "auto_register_policy_transforms": False},
        sync=True,
        # used only when no Ray session runs yet; the workers' logs (each line prefixed with a collector's multi-line
        # repr) stay in Ray's log files, their errors reach the learner as exceptions
        ray_init_config={"address": ray_address, "log_to_driver": False},
        remote_configs={"num_cpus": worker_cpus},
        **common,
    )

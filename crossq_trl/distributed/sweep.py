"""Running independent jobs (env x seed cells of a benchmark or a sweep) on a Ray cluster or a local process pool."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

from crossq_trl.distributed.collectors import RAY_MISSING, ray_available

Job = TypeVar("Job")
SWEEP_BACKENDS = ("process", "ray")


def run_jobs(
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    *,
    backend: str = "process",
    workers: int = 2,
    ray_address: str | None = None,
    cpus_per_job: float = 1.0,
) -> Iterator[tuple[Job, Any, BaseException | None]]:
    """Run ``fn(job)`` for every job, each in a fresh process, and yield ``(job, result, error)`` as they finish
    (``error`` is None on success; a failed job does not stop the others).

    ``backend="process"``: ``workers`` spawned processes on this machine. ``backend="ray"``: Ray tasks, as many at
    once as the cluster has ``cpus_per_job`` CPUs for, on the cluster at ``ray_address`` (``None``: the running
    session, else a new local one). A fresh process per job (``max_tasks_per_child=1``, Ray's ``max_calls=1``)
    keeps compiled state, allocator and RNG state from leaking between jobs. ``fn`` and its jobs are pickled to the
    workers: on a cluster, return results rather than writing files, since the job may run on another node.
    """
    if backend not in SWEEP_BACKENDS:
        raise ValueError(f"backend must be one of {SWEEP_BACKENDS}, got {backend!r}.")
    if backend == "ray":
        yield from _run_on_ray(fn, jobs, ray_address, cpus_per_job)
        return
    pool_kwargs: dict[str, Any] = {"mp_context": get_context("spawn")}
    if sys.version_info >= (3, 11):
        pool_kwargs["max_tasks_per_child"] = 1
    with ProcessPoolExecutor(max_workers=workers, **pool_kwargs) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], *_outcome(future.result)


def _run_on_ray(fn, jobs, ray_address, cpus_per_job):
    if not ray_available():
        raise ImportError(RAY_MISSING)
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address)
    remote_call = ray.remote(num_cpus=cpus_per_job, max_calls=1, max_retries=0)(_call)
    pending = {remote_call.remote(fn, job): job for job in jobs}
    while pending:
        (ref,), _ = ray.wait(list(pending))
        yield pending.pop(ref), *_outcome(lambda ref=ref: ray.get(ref))


def _call(fn: Callable[[Job], Any], job: Job) -> Any:
    """The Ray task: a plain function, so that ``fn`` can be any picklable callable (``ray.remote`` takes only
    Python functions and classes)."""
    return fn(job)


def _outcome(get: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return get(), None
    except Exception as err:
        return None, err

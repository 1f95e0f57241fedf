"""Scaling out with TorchRL's distributed collectors: remote collection (Ray or local worker processes) feeding
one learner, pushing the acting weights to the workers, and sweeps of independent runs on a Ray cluster.

Ray is an optional extra (``pip install 'crossq-trl[ray]'``); nothing here imports it until it is used."""

from crossq_trl.distributed.collectors import (
    BACKENDS,
    CrossQMultiSyncCollector,
    CrossQRayCollector,
    make_distributed_collector,
    ray_available,
)
from crossq_trl.distributed.sweep import run_jobs
from crossq_trl.distributed.weight_sync import PolicyWeightPush

__all__ = [
    "BACKENDS",
    "CrossQMultiSyncCollector",
    "CrossQRayCollector",
    "PolicyWeightPush",
    "make_distributed_collector",
    "ray_available",
    "run_jobs",
]

"""Replay components for TorchRL loops: prioritized sampling without TorchRL's C++ extension, a storage that
keeps each observation once, hindsight experience replay, and ``build_replay_buffer`` (sb3's
``replay_buffer_class`` options)."""

from crossq_trl.replay.factory import build_replay_buffer
from crossq_trl.replay.her import HerReplayBuffer, hindsight_goal_slots
from crossq_trl.replay.memory_optimized import MemoryOptimizedStorage
from crossq_trl.replay.prioritized_sampler import TensorPrioritizedSampler
from crossq_trl.replay.priority_update import PriorityUpdate, is_prioritized
from crossq_trl.replay.segment_tree import MinSegmentTree, SumSegmentTree

__all__ = [
    "HerReplayBuffer",
    "MemoryOptimizedStorage",
    "MinSegmentTree",
    "PriorityUpdate",
    "SumSegmentTree",
    "TensorPrioritizedSampler",
    "build_replay_buffer",
    "hindsight_goal_slots",
    "is_prioritized",
]

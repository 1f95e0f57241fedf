"""Replay buffers beyond the plain CrossQ one."""

from crossq_trl.replay.her import HerReplayBuffer, hindsight_goal_slots

__all__ = ["HerReplayBuffer", "hindsight_goal_slots"]

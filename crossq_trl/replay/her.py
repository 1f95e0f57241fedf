"""Hindsight Experience Replay (Andrychowicz et al., 2017) with sb3's ``HerReplayBuffer`` options.

A goal env (gymnasium-robotics' ``GoalEnv`` API) observes a Dict of ``observation``, ``achieved_goal`` and
``desired_goal`` and scores any pair of goals with ``env.compute_reward(achieved_goal, desired_goal, info)``.
Of each sampled batch, the share ``n_sampled_goal / (n_sampled_goal + 1)`` of the transitions are relabelled:
their ``desired_goal`` (now and next) becomes a goal the same episode achieved, and their reward is recomputed
for it. ``goal_selection_strategy`` picks that goal as sb3 does, as the ``("next", "achieved_goal")`` of a
transition of the episode: ``"future"`` one from the sampled transition to the episode's end (itself
included), ``"final"`` the episode's last one, ``"episode"`` any one.

Written here rather than taken from TorchRL's ``HERReplayBuffer`` (0.14) because that one does not fit the
CrossQ buffer: it finds the episodes by reading the whole storage's done flags again after each write (a copy
and a ``nonzero`` over up to a million transitions per sampled batch), it assumes one env's transitions one
after the other (the CrossQ buffer interleaves ``n_envs`` envs, time-major), and its goals are the
``achieved_goal`` *before* the goal transition's step, so the final state of an episode is never a goal. Here
the episode bounds of the sampled transitions only are found, by walking their env's done flags from them.
Differences from sb3: the running episode's transitions are sampled too (with goals from what it has achieved
so far), and ``compute_reward`` gets empty infos (infos are not stored; sb3's ``copy_info_dict=False`` passes
them, which the goal envs of gymnasium-robotics do not read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor

from crossq_trl.training.replay_buffer import CrossQReplayBuffer

GOAL_SELECTION_STRATEGIES = ("future", "final", "episode")
HER_OPTIONS = ("n_sampled_goal", "goal_selection_strategy", "copy_info_dict")  # sb3's HerReplayBuffer kwargs
STORAGE_OPTIONS = ("storage", "scratch_dir")  # replay_buffer_kwargs of every buffer the facade builds
ComputeReward = Callable[[np.ndarray, np.ndarray, Any], Any]


def goal_strategy_name(strategy: Any) -> str:
    """``"future"``, ``"final"`` or ``"episode"`` from a name or from sb3's ``GoalSelectionStrategy`` enum."""
    return str(getattr(strategy, "name", strategy)).lower()


def is_her_buffer_class(replay_buffer_class: Any) -> bool:
    """``"her"``, :class:`HerReplayBuffer`, or sb3's ``HerReplayBuffer`` class (same name, same options)."""
    if isinstance(replay_buffer_class, str):
        return replay_buffer_class.lower() == "her"
    return isinstance(replay_buffer_class, type) and replay_buffer_class.__name__ == "HerReplayBuffer"


def her_options(replay_buffer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """sb3's HER options, taken out of ``replay_buffer_kwargs`` (which may keep only the storage options), as
    plain data: the goal strategy by name, also when given as sb3's enum."""
    options = {key: replay_buffer_kwargs.pop(key) for key in HER_OPTIONS if key in replay_buffer_kwargs}
    unknown = set(replay_buffer_kwargs) - set(STORAGE_OPTIONS)
    if unknown:
        raise ValueError(
            f"replay_buffer_kwargs {sorted(unknown)} are not HerReplayBuffer options; it takes {list(HER_OPTIONS)} "
            f"and {' / '.join(STORAGE_OPTIONS)}."
        )
    if options.pop("copy_info_dict", False):
        raise NotImplementedError("copy_info_dict=True: infos are not stored (compute_reward gets empty ones).")
    if "goal_selection_strategy" in options:
        options["goal_selection_strategy"] = goal_strategy_name(options["goal_selection_strategy"])
    return options


def hindsight_goal_slots(
    done: Tensor,
    index: Tensor,
    strategy: str,
    *,
    stride: int,
    newest: int,
    size: int,
    capacity: int,
) -> Tensor:
    """The storage slots whose ``("next", "achieved_goal")`` become the new goals of the transitions at ``index``.

    ``done`` holds the ``("next", "done")`` flag (termination or truncation) of each of the ``capacity`` slots of
    a round-robin storage holding ``size`` transitions, the newest at slot ``newest``; the transitions of one env
    lie ``stride`` slots apart (``n_envs`` envs written time-major). An episode spans from the first transition
    after its env's previous end (or the oldest one stored) to its own end (or its env's newest one).
    """
    if strategy not in GOAL_SELECTION_STRATEGIES:
        raise ValueError(f"goal_selection_strategy must be one of {GOAL_SELECTION_STRATEGIES}, got {strategy!r}.")
    age = (newest - index) % capacity  # 0 for the newest transition
    steps_ahead = age // stride  # later transitions of the same env that are stored
    steps_behind = (size - 1 - age) // stride  # earlier ones
    # the episode's last transition: the first end from the sampled one on (or the env's newest)
    end = _first_end(done, index, steps_ahead, first=0, step=stride, capacity=capacity).clamp(max=steps_ahead)
    if strategy == "final":
        offset = end
    elif strategy == "future":
        offset = (torch.rand(index.shape) * (end + 1)).long().clamp(max=end)
    else:  # "episode": the episode starts right after the previous end before the sampled transition
        start = _first_end(done, index, steps_behind, first=1, step=-stride, capacity=capacity) - 1
        offset = (torch.rand(index.shape) * (start + end + 1)).long().clamp(max=start + end) - start
    return (index + offset * stride) % capacity


def _first_end(
    done: Tensor, index: Tensor, limit: Tensor, *, first: int, step: int, capacity: int, chunk: int = 64
) -> Tensor:
    """Per transition, the least ``k`` in ``[first, limit]`` whose slot ``index + k * step`` is an episode end,
    ``limit + 1`` if none: walked ``chunk`` steps at a time, as far as the unresolved transitions need."""
    result = limit + 1
    pending = torch.ones_like(index, dtype=torch.bool)
    reach = int(limit.max()) if len(limit) else -1
    for k0 in range(first, reach + 1, chunk):
        ks = torch.arange(k0, min(k0 + chunk, reach + 1))
        hit = done[(index.unsqueeze(-1) + ks * step) % capacity] & (ks <= limit.unsqueeze(-1))
        found = pending & hit.any(-1)
        result = torch.where(found, ks[hit.int().argmax(-1)], result)
        pending &= ~found & (limit >= k0 + chunk)  # done with the rows whose range ends in this chunk
        if not pending.any():
            break
    return result


class HerReplayBuffer(CrossQReplayBuffer):
    """The CrossQ replay buffer with hindsight goals (sb3's ``HerReplayBuffer`` options), relabelling each sampled
    batch; the stored transitions stay as collected, so checkpoints and resumption are the plain buffer's.

    Keyword Args:
        compute_reward: the goal env's ``compute_reward(achieved_goal, desired_goal, info)`` (numpy batches in,
            rewards out). It can be set later (``buffer.compute_reward = ...``), before the first sample.
        n_sampled_goal: relabelled transitions per real one: ``n / (n + 1)`` of each batch is relabelled
            (sb3's ``her_ratio``). Default 4.
        goal_selection_strategy: ``"future"`` (default), ``"final"`` or ``"episode"`` (see the module doc).
        achieved_goal_key, desired_goal_key: the goal entries. Defaults ``"achieved_goal"``, ``"desired_goal"``.
        Other arguments are :class:`~crossq_trl.training.replay_buffer.CrossQReplayBuffer`'s (``n_envs`` tells
        how the envs' transitions interleave); ``n_steps`` must be 1.
    """

    def __init__(
        self,
        *args,
        compute_reward: ComputeReward | None = None,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        achieved_goal_key: NestedKey = "achieved_goal",
        desired_goal_key: NestedKey = "desired_goal",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.n_steps != 1:
            raise ValueError(f"HER relabels one-step transitions: use n_steps=1 with it (got {self.n_steps}).")
        if not isinstance(n_sampled_goal, int) or isinstance(n_sampled_goal, bool) or n_sampled_goal < 0:
            raise ValueError(f"n_sampled_goal must be an integer >= 0, got {n_sampled_goal!r}.")
        strategy = goal_strategy_name(goal_selection_strategy)
        if strategy not in GOAL_SELECTION_STRATEGIES:
            raise ValueError(
                f"goal_selection_strategy must be one of {GOAL_SELECTION_STRATEGIES}, got {goal_selection_strategy!r}."
            )
        self.compute_reward = compute_reward
        self.n_sampled_goal = n_sampled_goal
        self.goal_selection_strategy = strategy
        self.her_ratio = 1 - 1 / (n_sampled_goal + 1)
        self.achieved_goal_key, self.desired_goal_key = achieved_goal_key, desired_goal_key

    def sample(self, batch_size: int | None = None, return_info: bool = False, include_info: bool | None = None):
        batch = super().sample(batch_size, return_info=return_info, include_info=include_info)
        data = batch[0] if return_info else batch
        if len(self):
            self._relabel(data)
        return batch

    def _relabel(self, batch: TensorDictBase) -> None:
        """Give the first ``her_ratio`` of ``batch`` (randomly sampled, so a random share) hindsight goals."""
        if self.compute_reward is None:
            raise ValueError(
                "HerReplayBuffer has no compute_reward: pass the goal env's (compute_reward=env.unwrapped."
                "compute_reward), or build the model with a goal env."
            )
        count = int(self.her_ratio * batch.shape[0])
        if count == 0:
            return
        index = batch.get("index")[:count].cpu()
        storage = self._storage._storage
        capacity = self._storage.max_size
        slots = hindsight_goal_slots(
            storage.get(("next", "done")).reshape(capacity),
            index,
            self.goal_selection_strategy,
            stride=self.n_envs,
            newest=(self._writer._cursor - 1) % capacity,
            size=len(self),
            capacity=capacity,
        )
        achieved_key, desired_key = ("next", self.achieved_goal_key), self.desired_goal_key
        goals = storage.get(achieved_key)[slots].to(batch.device)
        batch.get(desired_key)[:count] = goals
        batch.get(("next", desired_key))[:count] = goals
        reward = self.compute_reward(
            batch.get(achieved_key)[:count].cpu().numpy(), goals.cpu().numpy(), [{} for _ in range(count)]
        )
        rewards = batch.get(("next", "reward"))
        rewards[:count] = torch.as_tensor(np.asarray(reward), dtype=rewards.dtype).reshape(rewards[:count].shape)

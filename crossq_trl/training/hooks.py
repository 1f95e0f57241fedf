"""Trainer hooks of CrossQ: episode statistics, periodic evaluation, user callbacks."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.trainers import Trainer, TrainerHookBase

from crossq_trl.training.evaluation import evaluate_policy


class EpisodeStatistics(TrainerHookBase):
    """Returns and lengths of the episodes that end in each collected batch, over a window.

    Reads ``("next", "episode_reward")`` and ``("next", "step_count")`` written by the
    ``RewardSum`` / ``StepCounter`` transforms of :func:`~crossq_trl.training.make_env`.
    """

    def __init__(self, window: int = 100) -> None:
        self.returns: deque[float] = deque(maxlen=max(window, 1))
        self.lengths: deque[int] = deque(maxlen=max(window, 1))
        self.num_episodes = 0

    def __call__(self, batch: TensorDictBase) -> None:
        done = batch.get(("next", "done")).squeeze(-1)
        if not done.any():
            return
        self.returns.extend(batch.get(("next", "episode_reward")).squeeze(-1)[done].tolist())
        self.lengths.extend(batch.get(("next", "step_count")).squeeze(-1)[done].tolist())
        self.num_episodes += int(done.sum())

    def summary(self) -> dict[str, float]:
        if not self.returns:
            return {}
        return {
            "rollout/ep_rew_mean": sum(self.returns) / len(self.returns),
            "rollout/ep_len_mean": sum(self.lengths) / len(self.lengths),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"returns": list(self.returns), "lengths": list(self.lengths), "num_episodes": self.num_episodes}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.returns.extend(state_dict["returns"])
        self.lengths.extend(state_dict["lengths"])
        self.num_episodes = state_dict["num_episodes"]

    def register(self, trainer: Trainer, name: str = "episode_statistics") -> None:
        trainer.register_op("pre_steps_log", self)
        trainer.register_module(name, self)


class PeriodicEvaluation(TrainerHookBase):
    """Every ``eval_freq`` collected frames, ``n_episodes`` deterministic episodes on ``env``."""

    def __init__(self, env: EnvBase, policy: TensorDictModuleBase, eval_freq: int, n_episodes: int = 10) -> None:
        self.env, self.policy = env, policy
        self.eval_freq, self.n_episodes = eval_freq, n_episodes
        self.next_eval = eval_freq
        self.last_result: dict[str, float] = {}
        self._trainer: Trainer | None = None

    def due(self) -> bool:
        return self._trainer.collected_frames >= self.next_eval

    def __call__(self, batch: TensorDictBase | None = None) -> dict[str, float] | None:
        if not self.due():
            return None
        while self.next_eval <= self._trainer.collected_frames:
            self.next_eval += self.eval_freq
        returns, lengths = evaluate_policy(self.env, self.policy, self.n_episodes)
        self.last_result = {
            "eval/mean_reward": returns.mean().item(),
            "eval/std_reward": returns.std(correction=0).item(),
            "eval/mean_ep_length": lengths.float().mean().item(),
        }
        return self.last_result

    def state_dict(self) -> dict[str, Any]:
        return {"next_eval": self.next_eval, "last_result": self.last_result}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.next_eval, self.last_result = state_dict["next_eval"], state_dict["last_result"]

    def register(self, trainer: Trainer, name: str = "evaluation") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)
        trainer.register_module(name, self)


class Throughput:
    """Env steps and gradient updates per second since the previous report."""

    def __init__(self) -> None:
        self._time = time.perf_counter()
        self._frames = self._updates = 0

    def __call__(self, frames: int, updates: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._time, 1e-9)
        rates = {
            "time/env_steps_per_s": (frames - self._frames) / elapsed,
            "time/updates_per_s": (updates - self._updates) / elapsed,
        }
        self._time, self._frames, self._updates = now, frames, updates
        return rates


def scalars(metrics: TensorDictBase | None, prefix: str = "train/") -> dict[str, float]:
    """Device tensors to Python floats, for logging (the one host sync per report)."""
    if metrics is None:
        return {}
    values = torch.stack([value.float() for value in metrics.values()]).tolist()
    return {prefix + key: value for key, value in zip(metrics.keys(), values, strict=True)}


Callback = Callable[["Trainer"], bool | None]

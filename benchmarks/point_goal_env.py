"""A small goal env for HER checks: a point in the plane reaching a random goal, sparse reward.

The point starts at the origin, each action moves it by at most ``step`` per axis, the goal is uniform in the
square ``[-1, 1]^2``, and the reward is ``-1`` until the point is within ``distance_threshold`` of it, ``0``
there (the ``GoalEnv`` API of gymnasium-robotics: Dict observation ``observation`` / ``achieved_goal`` /
``desired_goal``, ``compute_reward`` on batches, ``info["is_success"]``). Episodes end by truncation only. A
uniformly random policy ends within reach of the goal in about 3% of the episodes: without hindsight goals the
critic sees almost only -1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PointGoalEnv(gym.Env):
    def __init__(self, max_episode_steps: int = 15, step: float = 0.15, distance_threshold: float = 0.15) -> None:
        self.max_episode_steps, self.step_size, self.distance_threshold = max_episode_steps, step, distance_threshold
        box = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(observation=box, achieved_goal=box, desired_goal=box)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def compute_reward(self, achieved_goal, desired_goal, info) -> np.ndarray:
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1)
        return -(distance > self.distance_threshold).astype(np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        return {"observation": self.position.copy(), "achieved_goal": self.position.copy(), "desired_goal": self.goal}

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.position = np.zeros(2, dtype=np.float32)
        self.goal = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        self.steps = 0
        return self._observation(), {}

    def step(self, action):
        move = self.step_size * np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.position = np.clip(self.position + move, -1.0, 1.0).astype(np.float32)
        self.steps += 1
        reward = float(self.compute_reward(self.position, self.goal, {}))
        info = {"is_success": reward == 0.0}
        return self._observation(), reward, False, self.steps >= self.max_episode_steps, info


def success_rate(model, episodes: int = 50) -> float:
    """The deterministic policy's share of ``episodes`` fixed episodes (seeds 1000, 1001, ...) that end within reach
    of the goal."""
    env, successes = PointGoalEnv(), 0
    for episode in range(episodes):
        observation, _ = env.reset(seed=1000 + episode)
        for _ in range(env.max_episode_steps):
            observation, _, _, _, info = env.step(model.predict(observation, deterministic=True)[0])
        successes += info["is_success"]
    return successes / episodes

"""A single gymnasium env as a TorchRL env, with little Python per step.

Written here rather than used as ``GymWrapper`` plus ``DoubleToFloat``, ``RewardSum`` and
``StepCounter`` transforms because that stack spends about 0.9 ms of Python per step on one env
(generic dict-to-TensorDict conversion with a module lookup per call, one TensorDict pass per
transform, spec checks, ``step_mdp``) against 0.15 ms for a MuJoCo step itself: on a small
network that is more than the gradient update. This env produces the same keys and values
(float32 observations, ``reward``, ``done``/``terminated``/``truncated``, ``episode_reward``
and ``step_count``) and implements ``step_and_maybe_reset`` and ``rand_action`` directly, and
``buffered_rollout``, which writes a batch of steps into preallocated arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from crossq_trl.modules.specs import check_vector_action
from crossq_trl.training.faults import EnvStepError

_DONE_KEYS = ("done", "terminated", "truncated")
_RESERVED_KEYS = (*_DONE_KEYS, "reward", "action", "episode_reward", "step_count", "is_init", "next")


def _box_spec(space: gym.spaces.Box) -> Bounded | Unbounded:
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    if torch.isfinite(low).all() and torch.isfinite(high).all():
        return Bounded(low, high, low.shape, dtype=torch.float32)
    return Unbounded(low.shape, dtype=torch.float32)


def _observation_specs(space: gym.Space) -> dict[str, Bounded | Unbounded]:
    """The observation entries: ``observation`` for a vector Box, one entry per key for a Dict of Boxes."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return {"observation": _box_spec(space)}
    if isinstance(space, gym.spaces.Dict) and all(isinstance(entry, gym.spaces.Box) for entry in space.values()):
        clashes = sorted(set(space.keys()) & set(_RESERVED_KEYS))
        if clashes:
            raise ValueError(
                f"LeanGymEnv: the Dict observation entries {clashes} clash with the keys it writes itself "
                f"{list(_RESERVED_KEYS)}; rename them in a gymnasium ObservationWrapper."
            )
        return {key: _box_spec(entry) for key, entry in space.items()}
    raise ValueError(
        f"LeanGymEnv needs a 1-D Box or a Dict of Box observation space, got {space}; flatten it first "
        "(gymnasium.wrappers.FlattenObservation)."
    )


class LeanGymEnv(EnvBase):
    """A gymnasium env with Box actions and a Box observation vector (or a Dict of Boxes), one step at a time.

    Keys: ``observation`` (float32; with a Dict observation space, each entry under its own key instead,
    float32 and of the entry's shape, as TorchRL's ``GymWrapper`` writes them), ``action``, ``("next", "reward")``,
    ``done``, ``terminated``, ``truncated`` and the episode statistics ``episode_reward`` (the return so
    far) and ``step_count``, as TorchRL's ``RewardSum`` and ``StepCounter`` write them.
    ``set_seed`` resets the gymnasium env with that seed, as ``GymWrapper`` does; random
    actions (:meth:`rand_action`) come from torch's generator, as ``action_spec.rand()``.
    With ``mark_episode_start=True`` it also writes ``is_init``, True on the first step of
    each episode, as TorchRL's ``InitTracker`` does (action noise restarts on it).
    """

    def __init__(self, env: gym.Env, *, device: torch.device | str = "cpu", mark_episode_start: bool = False) -> None:
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError(f"LeanGymEnv needs a Box action space, got {env.action_space}.")
        check_vector_action(env.action_space.shape)
        observation_specs = _observation_specs(env.observation_space)
        super().__init__(device=device, batch_size=torch.Size([]))
        self._env = env
        flag = Categorical(2, (1,), dtype=torch.bool, device=device)
        self.observation_spec = Composite(
            **observation_specs,
            episode_reward=Unbounded((1,), dtype=torch.float32),
            step_count=Bounded(0, torch.iinfo(torch.int64).max, (1,), dtype=torch.int64),
            device=device,
        )
        self._dict_observation = isinstance(env.observation_space, gym.spaces.Dict)
        self._observation_keys = list(observation_specs)
        self._rollout_length: int | None = None  # the length buffered_rollout's buffers were made for
        self._rows_of: TensorDict | None = None  # the batch whose per-step views _rollout_rows made
        self._mark_episode_start = mark_episode_start
        if mark_episode_start:
            self.observation_spec["is_init"] = flag.clone()
        self.action_spec = _box_spec(env.action_space).to(device)
        self.reward_spec = Unbounded((1,), dtype=torch.float32, device=device)
        self.done_spec = Composite({key: flag.clone() for key in _DONE_KEYS}, device=device)
        self._action_low, self._action_high = self.action_spec.space.low, self.action_spec.space.high
        self._action_span = self._action_high - self._action_low

    def _set_seed(self, seed: int | None) -> None:
        self._env.reset(seed=seed)

    def _observations(self, observation: np.ndarray | dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self._dict_observation:
            return {key: self._tensor(np.array(value, dtype=np.float32)) for key, value in observation.items()}
        return {"observation": self._tensor(np.array(observation, dtype=np.float32))}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the env's device (``torch.from_numpy``: a third of ``torch.tensor``'s cost, which
        counts at a few tensors per step)."""
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    def _root(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        episode_reward: torch.Tensor,
        step_count: torch.Tensor,
        terminated: bool,
        truncated: bool,
    ) -> TensorDict:
        flags = self._tensor(np.array([terminated or truncated, terminated, truncated]))
        # _new_unsafe skips the constructor's per-entry checks (shape, device), half of its cost; every entry
        # here is built with the right shape on the env's device. TorchRL uses it on its own hot paths.
        return TensorDict._new_unsafe(
            {
                **self._observations(observation),
                "episode_reward": episode_reward,
                "step_count": step_count,
                "done": flags[0:1],
                "terminated": flags[1:2],
                "truncated": flags[2:3],
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        observation, _ = self._env.reset()
        zero_return = torch.zeros(1, device=self.device)
        root = self._root(observation, zero_return, torch.zeros(1, dtype=torch.int64, device=self.device), False, False)
        if self._mark_episode_start:
            root.set("is_init", torch.ones(1, dtype=torch.bool, device=self.device))
        return root

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        """The episode statistics continue those of ``tensordict`` (0 when it has none), as the transforms do."""
        action = tensordict.get("action")
        action = (action if action.device.type == "cpu" else action.cpu()).numpy()
        observation, reward, terminated, truncated, _ = self._env.step(action)
        reward = self._tensor(np.array([reward], dtype=np.float32))
        episode_reward = tensordict.get("episode_reward", None)
        step_count = tensordict.get("step_count", None)
        episode_reward = reward if episode_reward is None else episode_reward + reward
        step_count = torch.ones(1, dtype=torch.int64, device=self.device) if step_count is None else step_count + 1
        out = self._root(observation, episode_reward, step_count, bool(terminated), bool(truncated))
        out.set("reward", reward)
        if self._mark_episode_start:
            out.set("is_init", torch.zeros(1, dtype=torch.bool, device=self.device))
        return out

    def step_and_maybe_reset(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """One step; the returned root is the next step's input (a fresh episode's after an ending)."""
        next_td = self._step(tensordict)
        tensordict.set("next", next_td)
        if next_td.get("done").item():
            return tensordict, self._reset()
        return tensordict, next_td.exclude("reward")

    def buffered_rollout(
        self, carrier: TensorDictBase, length: int, policy: Callable[[TensorDictBase], TensorDictBase] | None = None
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """``length`` steps from ``carrier``, stacked, and the next step's carrier: the steps that ``length`` calls
        of :meth:`step_and_maybe_reset` give, with the actions of :meth:`rand_action` (``policy=None``) or of
        ``policy``.

        ``policy`` is called on each step's root entries (observations, episode statistics, done flags and
        ``is_init``, as a TensorDict of views) and must write the ``action`` entry, and only that. An error of the
        env (in ``step`` or ``reset``) is raised as :class:`~crossq_trl.training.faults.EnvStepError`, with the
        steps completed before it; the policy's errors pass through as they are. Per step the
        rollout only copies numbers into arrays allocated once per ``length`` (the batch returned views them, so
        the next call overwrites it: consume it first); what that skips, a TensorDict and a dozen small tensors per
        step and their stack, costs more host time than a MuJoCo step.
        """
        if length < 1:
            raise ValueError(f"buffered_rollout needs length >= 1, got {length}.")
        batch, root, nxt = self._rollout_buffers(length)
        actions = root["action"]
        if policy is None:
            actions[:] = self._random_actions(length).numpy()
        else:
            rows = self._rollout_rows(batch)
        flag_keys = (*_DONE_KEYS, "is_init") if self._mark_episode_start else _DONE_KEYS
        for key in flag_keys:
            root[key][:], nxt[key][:] = False, False
            root[key][0] = carrier.get(key).item()
        observation = {key: carrier.get(key).numpy(force=True) for key in self._observation_keys}
        episode_reward = np.float32(carrier.get("episode_reward").item())
        step_count = int(carrier.get("step_count").item())
        for i in range(length):
            for key in self._observation_keys:
                root[key][i] = observation[key]
            root["episode_reward"][i], root["step_count"][i] = episode_reward, step_count
            if policy is not None:
                actions[i] = policy(rows[i]).get("action").numpy()
            try:
                gym_observation, reward, terminated, truncated, _ = self._env.step(actions[i])
                reset_observation = self._env.reset()[0] if terminated or truncated else None
            except Exception as err:
                raise EnvStepError(f"env.step raised {type(err).__name__}: {err}", completed=i) from err
            reward = np.float32(reward)
            episode_reward, step_count = np.float32(episode_reward + reward), step_count + 1  # float32 as torch adds
            observation = self._observation_dict(gym_observation)
            for key in self._observation_keys:
                nxt[key][i] = observation[key]
            nxt["reward"][i], nxt["episode_reward"][i], nxt["step_count"][i] = reward, episode_reward, step_count
            nxt["done"][i], nxt["terminated"][i], nxt["truncated"][i] = terminated or truncated, terminated, truncated
            if reset_observation is not None:
                gym_observation = reset_observation
                observation = self._observation_dict(gym_observation)
                episode_reward, step_count = np.float32(0.0), 0
                if self._mark_episode_start and i + 1 < length:
                    root["is_init"][i + 1] = True
        next_carrier = self._root(
            gym_observation,
            self._tensor(np.array([episode_reward], dtype=np.float32)),
            self._tensor(np.array([step_count], dtype=np.int64)),
            False,
            False,
        )
        if self._mark_episode_start:
            next_carrier.set("is_init", self._tensor(np.array([step_count == 0])))
        return batch, next_carrier

    def _random_actions(self, count: int) -> torch.Tensor:
        """``count`` uniform random actions: the numbers of ``count`` calls of :meth:`rand_action` (torch fills a
        tensor's uniform numbers element by element from one generator stream)."""
        low, high = self._action_low, self._action_high
        draws = torch.empty(count, *low.shape, device=self.device).uniform_()
        return (draws * self._action_span + low).clamp(low, high)

    def _observation_dict(self, observation: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return observation if self._dict_observation else {"observation": observation}

    def _rollout_buffers(self, length: int) -> tuple[TensorDict, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The batch :meth:`buffered_rollout` fills, and numpy views of its root and ``next`` entries; made once per
        ``length``."""
        if self._rollout_length != length:
            specs = self.observation_spec
            keys = [
                *self._observation_keys,
                "episode_reward",
                "step_count",
                *(("is_init",) if self._mark_episode_start else ()),
            ]

            def state() -> dict[str, torch.Tensor]:
                entries = {key: torch.zeros(length, *specs[key].shape, dtype=specs[key].dtype) for key in keys}
                return entries | {key: torch.zeros(length, 1, dtype=torch.bool) for key in _DONE_KEYS}

            root, nxt = state(), state()
            root["action"] = torch.zeros(length, *self.action_spec.shape)
            nxt["reward"] = torch.zeros(length, 1)
            batch = TensorDict({**root, "next": TensorDict(nxt, [length])}, [length], device=self.device)
            arrays = ({key: value.numpy() for key, value in entries.items()} for entries in (root, nxt))
            self._rollout_length, self._rollout = length, (batch, *arrays)
        return self._rollout

    def _rollout_rows(self, batch: TensorDict) -> tuple[TensorDictBase, ...]:
        """The root entries of each step of :meth:`_rollout_buffers`' ``batch``, as TensorDicts of views (the
        policy's inputs); made once per batch."""
        if self._rows_of is not batch:
            self._rows_of, self._rows = batch, batch.exclude("next").unbind(0)
        return self._rows

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """A uniform random action in the bounds (the numbers ``action_spec.rand()`` draws)."""
        low, high = self._action_low, self._action_high
        action = (torch.empty(low.shape, device=self.device).uniform_() * self._action_span + low).clamp(low, high)
        if tensordict is None:
            tensordict = TensorDict(batch_size=self.batch_size, device=self.device)
        tensordict.set("action", action)
        return tensordict

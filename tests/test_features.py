"""Dict observations and features extractors: each Dict entry its own key, flattened and concatenated by default,
the actor loss training the actor's extractor and the critic loss the critic's (a shared one: the actor loss
only, as in sb3), and a facade model with Dict observations that acts, saves and loads."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from benchmarks.features_compile_check import LinearExtractor
from crossq_trl import (
    ActingPolicy,
    CrossQ,
    CrossQLoss,
    CrossQUpdate,
    FlattenExtractor,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
    make_env,
)
from crossq_trl.modules.features import make_features_extractor

OBS_SPEC = Composite(position=Unbounded((3,)), grid=Unbounded((2, 2)))
ACTION_SPEC = Bounded(-1.0, 1.0, (2,))
KEYS = ["position", "grid"]


class DictEnv(gym.Env):
    """A Dict observation of a vector and a matrix; the reward is the action's first entry."""

    observation_space = gym.spaces.Dict(
        position=gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32), grid=gym.spaces.Box(0.0, 1.0, (2, 2))
    )
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {}

    def _observation(self):
        return {"position": np.full(3, self.t / 10, np.float32), "grid": np.arange(4.0).reshape(2, 2) + self.t}

    def step(self, action):
        self.t += 1
        return self._observation(), float(action[0]), False, self.t >= 5, {}


def batch(size: int = 8) -> TensorDict:
    def observations():
        return {"position": torch.randn(size, 3), "grid": torch.randn(size, 2, 2)}

    return TensorDict(
        {
            **observations(),
            "action": ACTION_SPEC.rand((size,)),
            "next": {
                **observations(),
                "reward": torch.randn(size, 1),
                "done": torch.zeros(size, 1, dtype=torch.bool),
                "terminated": torch.zeros(size, 1, dtype=torch.bool),
            },
        },
        [size],
    )


def test_dict_observations_are_separate_keys():
    env = make_env(DictEnv)
    assert set(env.observation_spec.keys()) == {"position", "grid", "episode_reward", "step_count"}
    assert env.observation_spec["grid"].shape == (2, 2) and env.observation_spec["position"].shape == (3,)
    rollout = env.rollout(3, break_when_any_done=False)
    assert rollout["grid"].dtype == torch.float32
    torch.testing.assert_close(rollout["next", "grid"][2], torch.arange(4.0).reshape(2, 2) + 3)
    torch.testing.assert_close(rollout["next", "position"][1], torch.full((3,), 0.2))
    # a Dict with a non-Box entry is flattened into one vector, as before
    mixed = gym.spaces.Dict(a=gym.spaces.Discrete(3), b=gym.spaces.Box(-1.0, 1.0, (2,)))
    flat_env = make_env(lambda: _with_space(DictEnv(), mixed))
    assert flat_env.observation_spec["observation"].shape == (5,)


def _with_space(env: gym.Env, space: gym.Space) -> gym.Env:
    class Mixed(gym.ObservationWrapper):
        observation_space = space

        def observation(self, observation):
            return {"a": 1, "b": observation["position"][:2]}

    return Mixed(env)


def test_flatten_extractor_concatenates_in_key_order():
    extractor = make_features_extractor(FlattenExtractor, OBS_SPEC, KEYS)
    assert extractor.features_dim == 7
    position, grid = torch.arange(3.0).expand(2, 3), torch.tensor([[10.0, 11.0], [12.0, 13.0]]).expand(2, 2, 2)
    want = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 13.0]).expand(2, 7)
    torch.testing.assert_close(extractor({"position": position, "grid": grid}), want)
    with pytest.raises(ValueError, match="features_dim"):
        make_features_extractor(nn.Identity, OBS_SPEC, KEYS)


def make_loss(shared: bool) -> CrossQLoss:
    specs = {"observation_spec": OBS_SPEC, "action_spec": ACTION_SPEC, "in_keys": KEYS, "net_arch": [8]}
    actor_extractor = LinearExtractor(OBS_SPEC)
    critic_extractor = actor_extractor if shared else LinearExtractor(OBS_SPEC)
    actor = make_crossq_actor(**specs, features_extractor=actor_extractor)
    critic = make_crossq_critic(**specs, features_extractor=critic_extractor, share_features_extractor=shared)
    loss = CrossQLoss(actor, critic)
    loss.make_value_estimator(gamma=0.99)
    return loss


def extractor_grads(loss: CrossQLoss, which: str) -> dict[str, bool]:
    """Whether each network's extractor gets a gradient from the critic loss or the actor loss."""
    loss.zero_grad(set_to_none=True)
    data = batch()
    value = loss.qvalue_loss(data)[0] if which == "critic" else loss.actor_loss(data)[0]
    value.backward()
    networks = {"actor": loss.actor_network.module[0][0], "critic": loss.qvalue_network[0]}
    return {name: net.extractor.linear.weight.grad is not None for name, net in networks.items()}


def test_each_loss_trains_its_own_extractor():
    loss = make_loss(shared=False)
    assert extractor_grads(loss, "critic") == {"actor": False, "critic": True}
    assert extractor_grads(loss, "actor") == {"actor": True, "critic": False}
    optimizers = make_crossq_optimizers(loss)
    critic_params = {id(p) for group in optimizers.critic.param_groups for p in group["params"]}
    assert id(loss.qvalue_network[0].extractor.linear.weight) in critic_params


def test_a_shared_extractor_is_trained_by_the_actor_loss_only():
    loss = make_loss(shared=True)
    extractor = loss.actor_network.module[0][0].extractor
    assert loss.qvalue_network[0].extractor is extractor
    assert not any("extractor" in name for name in loss.qvalue_network.state_dict())  # the actor's module
    assert extractor_grads(loss, "critic") == {"actor": False, "critic": False}
    assert extractor_grads(loss, "actor") == {"actor": True, "critic": True}  # the same module
    optimizers = make_crossq_optimizers(loss)
    critic_params = {id(p) for group in optimizers.critic.param_groups for p in group["params"]}
    actor_params = {id(p) for group in optimizers.actor.param_groups for p in group["params"]}
    assert id(extractor.linear.weight) in actor_params and id(extractor.linear.weight) not in critic_params
    # CrossQUpdate: the critic step leaves the shared extractor alone, the actor step moves it
    update = CrossQUpdate(loss, optimizers, policy_delay=2, compile=False)
    weight = extractor.linear.weight.detach().clone()
    update(batch(16))
    assert torch.equal(extractor.linear.weight, weight)
    update(batch(16))
    assert not torch.equal(extractor.linear.weight, weight)


def test_acting_policy_reads_the_features():
    loss = make_loss(shared=False)
    policy = ActingPolicy(loss.actor_network)
    data = batch(4).exclude("next", "action")
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        want = loss.actor_network(data.clone())["action"]
        torch.testing.assert_close(policy(data.clone())["action"], want)


@pytest.mark.parametrize("share", [False, True])
def test_facade_with_dict_observations_predicts_trains_saves_and_loads(tmp_path, share):
    policy_kwargs = {"net_arch": [16], "share_features_extractor": share}
    if share:
        policy_kwargs.update(features_extractor_class=LinearExtractor, features_extractor_kwargs={"features_dim": 5})
    model = CrossQ(
        "MultiInputPolicy",
        DictEnv,
        learning_starts=20,
        batch_size=16,
        compile=False,
        seed=0,
        policy_kwargs=policy_kwargs,
    )
    assert isinstance(model.actor.module[0][0].extractor, LinearExtractor if share else FlattenExtractor)
    model.learn(40)
    observation = {"position": np.zeros((2, 3), np.float32), "grid": np.ones((2, 2, 2), np.float32)}
    action, _ = model.predict(observation, deterministic=True)
    assert action.shape == (2, 2)
    with pytest.raises(ValueError, match="grid"):
        model.predict({"position": np.zeros(3)})
    vec_env = model.get_env()  # sb3's VecEnv view: Dict observations as dicts of (n_envs, *shape) arrays
    first = vec_env.reset()
    assert first["grid"].shape == (1, 2, 2) and first["position"].shape == (1, 3)
    assert model.predict(first)[0].shape == (1, 2) and isinstance(vec_env.step(action[:1])[0], dict)
    path = model.save(tmp_path / "model.pt")
    loaded = CrossQ.load(path, env=DictEnv)
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], action)
    assert (loaded.critic[0].extractor is loaded.actor.module[0][0].extractor) == share

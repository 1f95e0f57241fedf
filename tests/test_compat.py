"""sb3-style inputs and surface: vector envs (sb3 VecEnv, gymnasium VectorEnv) as TorchRL envs, exact
transitions at episode ends in every autoreset convention, and an sb3-contrib CrossQ script after swapping
the import."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from crossq_trl import CrossQ, make_env
from crossq_trl.compat import is_sb3_vec_env, to_torchrl_env
from crossq_trl.modules.gsde import GSDEActorNet

HAS_SB3 = importlib.util.find_spec("stable_baselines3") is not None
needs_sb3 = pytest.mark.skipif(not HAS_SB3, reason="stable_baselines3 is not installed (the duck-typed tests cover it)")
TINY = {"policy_kwargs": {"net_arch": [32, 32]}, "batch_size": 16, "compile": False}


class CountingEnv(gym.Env):
    """Observation ``[episode, t]``, reward ``t`` after the step; each episode ends after ``length`` steps,
    terminated or truncated: every transition can be told from the observations."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, length: int, terminate: bool) -> None:
        self.length, self.terminate = length, terminate
        self.episode, self.t = -1, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        end = self.t == self.length
        return self._obs(), float(self.t), end and self.terminate, end and not self.terminate, {}


ENV_FNS = [lambda: CountingEnv(2, terminate=True), lambda: CountingEnv(3, terminate=False)]


class FakeVecEnv:
    """sb3's VecEnv conventions without sb3: auto-reset in ``step_wait``, ``terminal_observation`` and
    ``TimeLimit.truncated`` in the infos. ``scale`` multiplies observations and rewards, as a normaliser would."""

    def __init__(self, env_fns, scale: float = 1.0) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs, self.scale = len(self.envs), scale
        self.observation_space, self.action_space = self.envs[0].observation_space, self.envs[0].action_space
        self.seeds: list[int | None] = [None] * self.num_envs

    def reset(self):
        obs = [env.reset(seed=seed)[0] for env, seed in zip(self.envs, self.seeds, strict=True)]
        return self.scale * np.stack(obs)

    def seed(self, seed=None):
        self.seeds = [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions):
        self.actions = actions

    def step_wait(self):
        obs, rewards, dones, infos = [], [], [], []
        for env, action in zip(self.envs, self.actions, strict=True):
            o, r, terminated, truncated, info = env.step(action)
            info["TimeLimit.truncated"] = truncated and not terminated
            if terminated or truncated:
                info["terminal_observation"] = self.scale * o
                o, _ = env.reset()
            obs.append(self.scale * o), rewards.append(self.scale * r), dones.append(terminated or truncated)
            infos.append(info)
        return np.stack(obs), np.array(rewards), np.array(dones), infos

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def env_method(self, name, *args, indices=None, **kwargs):
        return [getattr(env, name)(*args, **kwargs) for env in self.envs]

    def get_attr(self, name, indices=None):
        return [getattr(env, name) for env in self.envs]

    def set_attr(self, name, value, indices=None):
        for env in self.envs:
            setattr(env, name, value)

    def close(self):
        pass


def sb3_vec_env(kind: str):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    return DummyVecEnv(ENV_FNS) if kind == "sb3_dummy" else SubprocVecEnv(ENV_FNS, start_method="fork")


VECTOR_ENVS = {
    "gym_next_step": lambda: SyncVectorEnv(ENV_FNS),  # gymnasium 1.x's default mode
    "gym_same_step": lambda: SyncVectorEnv(ENV_FNS, autoreset_mode=AutoresetMode.SAME_STEP),
    "gym_disabled": lambda: SyncVectorEnv(ENV_FNS, autoreset_mode=AutoresetMode.DISABLED),
    "gym_async_next_step": lambda: AsyncVectorEnv(ENV_FNS, context="fork"),
    "duck_typed_vec_env": lambda: FakeVecEnv(ENV_FNS),
    "sb3_dummy": lambda: sb3_vec_env("sb3_dummy"),
    "sb3_subproc": lambda: sb3_vec_env("sb3_subproc"),
}


@pytest.mark.parametrize("kind", list(VECTOR_ENVS))
def test_vector_env_gives_every_transition_once(kind):
    """Seven steps of two envs whose episodes end at different steps (one terminated, one truncated): each
    transition's observation, next observation (the final one at an episode's end), reward, flags and
    episode statistics are the env's own, in every autoreset convention; none is lost or invented."""
    if kind.startswith("sb3") and not HAS_SB3:
        pytest.skip("stable_baselines3 is not installed (the duck-typed VecEnv covers its conventions)")
    vector_env = VECTOR_ENVS[kind]()
    env = make_env(to_torchrl_env(vector_env), mark_episode_start=True)
    rollout = env.rollout(7, break_when_any_done=False)
    vector_env.close()
    assert rollout.batch_size == (2, 7)
    for i, (length, terminate) in enumerate([(2, True), (3, False)]):
        steps = torch.arange(7)
        episode, t = steps // length, steps % length
        end = t + 1 == length
        torch.testing.assert_close(rollout["observation"][i], torch.stack([episode, t], -1).float())
        torch.testing.assert_close(rollout["next", "observation"][i], torch.stack([episode, t + 1], -1).float())
        torch.testing.assert_close(rollout["next", "reward"][i, :, 0], (t + 1).float())
        assert rollout["next", "terminated"][i, :, 0].tolist() == (end & terminate).tolist()
        assert rollout["next", "truncated"][i, :, 0].tolist() == (end & (not terminate)).tolist()
        torch.testing.assert_close(rollout["next", "step_count"][i, :, 0], t + 1)
        torch.testing.assert_close(rollout["next", "episode_reward"][i, :, 0], ((t + 1) * (t + 2) / 2).float())
        assert rollout["is_init"][i, :, 0].tolist() == (t == 0).tolist()


def test_async_vector_env_without_shared_memory_is_refused_in_next_step_mode():
    env = AsyncVectorEnv(ENV_FNS, shared_memory=False, context="fork")
    with pytest.raises(ValueError, match="shared_memory=True"):
        to_torchrl_env(env)
    env.close()


class NoTerminalObservation(FakeVecEnv):
    def step_wait(self):
        obs, rewards, dones, infos = super().step_wait()
        return obs, rewards, dones, [{} for _ in infos]


def test_vector_env_refusals():
    with pytest.raises(ValueError, match="continuous Box action"):
        to_torchrl_env(gym.make_vec("CartPole-v1", num_envs=2))
    dict_obs = FakeVecEnv(ENV_FNS)
    dict_obs.observation_space = gym.spaces.Dict(a=CountingEnv.observation_space)
    with pytest.raises(ValueError, match=r"must be a Box.*FlattenObservation"):
        to_torchrl_env(dict_obs)
    with pytest.raises(TypeError, match="neither a gymnasium VectorEnv nor an sb3 VecEnv"):
        to_torchrl_env(gym.make("Pendulum-v1"))
    env = make_env(to_torchrl_env(NoTerminalObservation(ENV_FNS)))
    with pytest.raises(ValueError, match=r"infos\[0\]\['terminal_observation'\]"):
        env.rollout(2, break_when_any_done=False)


def test_facade_trains_on_a_duck_typed_vec_env():
    """No sb3 needed: CrossQ takes a VecEnv-like object (n_envs from it), stores exactly the transitions it
    returns (scaled, as VecNormalize's would be), and gives it back from get_env; predict takes its batches."""
    vec_env = FakeVecEnv(ENV_FNS, scale=0.5)
    assert is_sb3_vec_env(vec_env)
    model = CrossQ("MlpPolicy", vec_env, learning_starts=10, seed=0, **TINY)
    model.learn(30)
    assert model.env.batch_size == (2,) and model.num_timesteps == 30 and model.update.num_updates == 11
    assert model.get_env() is vec_env
    data = model.replay_buffer[:30]
    torch.testing.assert_close(
        data["next", "observation"] - data["observation"], torch.tensor([0.0, 0.5]).expand(30, 2)
    )
    torch.testing.assert_close(data["next", "reward"][:, 0], data["next", "observation"][:, 1])  # scale * t
    terminated_steps = data["next", "terminated"][:, 0]
    assert terminated_steps.sum() > 0
    torch.testing.assert_close(data["next", "observation"][terminated_steps, 1], torch.full((7,), 1.0))

    obs = vec_env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 1)
    np.testing.assert_allclose(model.predict(obs[1], deterministic=True)[0], actions[1], rtol=1e-6)  # shape (1,)

    with pytest.raises(ValueError, match="n_envs=3, but the vector env has 2"):
        CrossQ("MlpPolicy", FakeVecEnv(ENV_FNS), n_envs=3, **TINY)
    with pytest.raises(ValueError, match="observation spec differs"):
        model.set_env(FakeVecEnv([lambda: gym.make("Pendulum-v1")] * 2))
    model.set_env(FakeVecEnv(ENV_FNS))
    model.learn(10)
    assert model.replay_buffer[30:40]["observation"][:, 1].max() == 2.0  # unscaled: it trained on the new env


def test_policy_is_a_view_of_the_model():
    model = CrossQ("MlpPolicy", "Pendulum-v1", use_sde=True, **TINY)
    policy = model.policy
    assert policy.actor is model.actor and policy.critic is model.critic
    assert {id(p) for p in policy.parameters()} == {
        id(p) for p in [*model.actor.parameters(), *model.critic.parameters()]
    }
    obs = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]], dtype=np.float32)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with torch.no_grad():
        next(model.actor.parameters()).add_(1.0)  # a change to the model shows through the policy
    np.testing.assert_array_equal(
        policy(torch.as_tensor(obs), deterministic=True).numpy(), model.predict(obs, deterministic=True)[0]
    )

    policy.set_training_mode(True)
    assert model.actor.training and model.critic.training
    policy.set_training_mode(False)
    assert not model.actor.training and not model.critic.training

    head = next(m for m in model.actor.modules() if isinstance(m, GSDEActorNet))
    model.predict(obs)
    assert head.steps_since_reset == 1
    policy.reset_noise()
    assert head.steps_since_reset == 0  # the next acting step draws new exploration matrices
    with pytest.raises(ValueError, match="use_sde=True"):
        CrossQ("MlpPolicy", "Pendulum-v1", **TINY).policy.reset_noise()


def test_gymnasium_sync_vector_env():
    vector_env = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    model = CrossQ("MlpPolicy", vector_env, learning_starts=20, seed=1, **TINY)
    model.learn(40)
    assert model.env.batch_size == (2,) and len(model.replay_buffer) == 40 and model.get_env() is vector_env
    obs, _ = vector_env.reset(seed=0)
    assert model.predict(obs)[0].shape == (2, 1)


@pytest.mark.parametrize("terminate", [True, False])
def test_get_env_of_a_gymnasium_env_has_the_vec_env_interface(terminate):
    """sb3 wraps an env given by id or as a gymnasium env in a DummyVecEnv and returns it from get_env(); here a
    view with its interface on the TorchRL env: batched observations, auto-reset, the final observation in the
    infos and TimeLimit.truncated only for episodes cut by a time limit."""
    model = CrossQ("MlpPolicy", CountingEnv(2, terminate=terminate), **TINY)
    vec_env = model.get_env()
    assert vec_env.env is model.env and vec_env.num_envs == 1 and vec_env.action_space.shape == (1,)
    obs = vec_env.reset()
    np.testing.assert_array_equal(obs, [[0.0, 0.0]])
    obs, rewards, dones, infos = vec_env.step(model.predict(obs)[0])
    np.testing.assert_array_equal(obs, [[0.0, 1.0]])
    assert rewards.tolist() == [1.0] and dones.tolist() == [False] and "terminal_observation" not in infos[0]
    obs, rewards, dones, infos = vec_env.step(np.zeros((1, 1)))
    np.testing.assert_array_equal(obs, [[1.0, 0.0]])  # the next episode's first observation
    assert rewards.tolist() == [2.0] and dones.tolist() == [True]
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [0.0, 2.0])
    assert infos[0]["TimeLimit.truncated"] is not terminate
    torchrl_env = make_env(CountingEnv(2, terminate=True))
    assert CrossQ("MlpPolicy", torchrl_env, **TINY).get_env() is torchrl_env  # a TorchRL env is returned as given


def sb3_contrib_script(CrossQ, path) -> dict:
    """An sb3-contrib CrossQ script, written for ``from sb3_contrib import CrossQ``."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    vec_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = CrossQ(
        "MlpPolicy",
        vec_env,
        learning_starts=100,
        batch_size=32,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
        verbose=0,
    )
    model.learn(total_timesteps=300)
    vec_env = model.get_env()
    obs = vec_env.reset()
    model.policy.set_training_mode(False)
    for _ in range(3):
        action, _ = model.predict(obs, deterministic=True)
        obs, _rewards, _dones, _infos = vec_env.step(action)
    model.save(path)
    loaded = CrossQ.load(path, env=vec_env)
    return {
        "model": model,
        "vec_env": vec_env,
        "action": action,
        "predictions": [m.predict(obs, deterministic=True)[0] for m in (model, loaded)],
        "loaded_env": loaded.get_env(),
    }


class EagerCrossQ(CrossQ):
    """CrossQ with compile=False by default: the same script, without a minute of compilation in the test suite."""

    def __init__(self, *args, compile: bool = False, **kwargs) -> None:
        super().__init__(*args, compile=compile, **kwargs)


@needs_sb3
def test_sb3_contrib_script_runs_after_swapping_the_import(tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    out = sb3_contrib_script(EagerCrossQ, tmp_path / "crossq_pendulum.zip")
    model, vec_env = out["model"], out["vec_env"]
    assert isinstance(vec_env, VecNormalize) and out["loaded_env"] is vec_env
    assert model.num_timesteps == 300 and model.update.num_updates == (300 - 100) // 2 + 1
    assert vec_env.obs_rms.count > 300  # every step went through VecNormalize: CrossQ trained on what it returns
    assert out["action"].shape == (2, 1) and np.all(np.abs(out["action"]) <= 2)
    np.testing.assert_array_equal(*out["predictions"])
    assert not model.actor.training and not model.critic.training


@pytest.mark.skipif(importlib.util.find_spec("sb3_contrib") is None, reason="sb3_contrib is not installed")
def test_the_script_is_sb3_contrib_code(tmp_path):
    """The same script with the import it was written for, so the swap above is a swap of one line."""
    from sb3_contrib import CrossQ as SB3CrossQ

    out = sb3_contrib_script(SB3CrossQ, tmp_path / "crossq_pendulum.zip")
    assert out["model"].num_timesteps == 300 and out["loaded_env"] is not None
    assert out["action"].shape == (2, 1)
    np.testing.assert_array_equal(*out["predictions"])


def test_checkpoint_of_a_vec_env_run_resumes_on_a_vec_env(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", FakeVecEnv(ENV_FNS), learning_starts=10, seed=0, **TINY)
    model.learn(20, checkpoint_path=path)
    with pytest.raises(ValueError, match="pass env="):
        CrossQ.resume(path)
    vec_env = FakeVecEnv(ENV_FNS)
    resumed = CrossQ.resume(path, env=vec_env)
    assert resumed.get_env() is vec_env and resumed.num_timesteps == 20 and len(resumed.replay_buffer) == 20
    torch.testing.assert_close(resumed.loss_module.state_dict(), model.loss_module.state_dict())
    resumed.learn(10, reset_num_timesteps=False)
    assert resumed.num_timesteps == 30 and len(resumed.replay_buffer) == 30

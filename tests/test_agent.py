"""The sb3-style CrossQ facade: learn, predict, save/load, parameters, set_env and its refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import TensorDictReplayBuffer
from torchrl.envs import GymWrapper

from crossq_trl import CrossQ, make_env

TINY = {"net_arch": [32, 32], "batch_size": 32, "compile": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Pendulum model after a short run with updates (BRN statistics and optimizers moved), and its saved file."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=50, policy_delay=2, seed=3, **TINY)
    model.learn(150)
    path = model.save(tmp_path_factory.mktemp("model") / "model.pt")
    return model, path


def observations(n: int, seed: int = 0) -> np.ndarray:
    space = gym.make("Pendulum-v1").observation_space
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def test_learn_through_the_facade(trained):
    model, _ = trained
    assert model.num_timesteps == 150
    assert model.trainer.collected_frames == 150
    assert len(model.replay_buffer) == 150
    assert model.update.num_updates == 150 - 50 + 1
    assert model.update.num_actor_updates == model.update.num_updates // 2
    assert model.get_env().env is model.env  # sb3's VecEnv interface on the TorchRL env (tests/test_compat.py)
    assert not model.actor.training
    # the BRN running statistics of the actor moved away from their initial (0, 1)
    stats = {k: v for k, v in model.actor.state_dict().items() if k.endswith("running_mean")}
    assert stats and any(v.abs().max() > 1e-3 for v in stats.values())


def test_learning_starts_holds_when_learn_is_called_in_pieces():
    """The first update runs at env step learning_starts however the random phase is split between learn calls
    (the collector of a continued call counts its random frames from its own start)."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=300, seed=0, **TINY)
    model.learn(100)
    model.learn(199, reset_num_timesteps=False)  # env step 299, in chunks of 1000 steps at most
    assert (model.num_timesteps, model.update.num_updates) == (299, 0)
    model.learn(11, reset_num_timesteps=False)
    assert (model.num_timesteps, model.update.num_updates) == (310, 11)  # steps 300..310, as in one call


def test_learn_continues_with_reset_num_timesteps_false():
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=20, seed=0, **TINY)
    model.learn(30)
    first = model.update.num_updates
    model.learn(200, reset_num_timesteps=False)
    assert model.trainer.episodes.num_episodes == 1  # the 200-step episode spans both calls
    model.learn(170, reset_num_timesteps=False)
    assert model.trainer.episodes.num_episodes == 2  # episode statistics carry over, like sb3's ep_info_buffer
    model.learn(30, reset_num_timesteps=False)
    first += 370
    assert model.num_timesteps == 430
    assert model.update.num_updates == first + 30  # no new random warm-up once past learning_starts
    model.learn(30)  # a fresh count restarts the warm-up
    assert model.num_timesteps == 30 and model.update.num_updates == first + 30 + 11


def test_callback_can_stop_training():
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=10, seed=0, **TINY)
    calls = []

    def callback(m):
        calls.append(m.num_timesteps)
        return m.num_timesteps < 25

    model.learn(100, callback=callback)
    assert model.num_timesteps == 25
    assert calls == list(range(1, 26))  # the callback sees the current step count, as in sb3


def test_predict_shapes_and_types(trained):
    model, _ = trained
    batch = observations(5)
    action, state = model.predict(batch, deterministic=True)
    assert state is None
    assert isinstance(action, np.ndarray) and action.shape == (5, 1) and action.dtype == np.float32
    single, _ = model.predict(batch[0], deterministic=True)
    assert isinstance(single, np.ndarray) and single.shape == (1,)
    np.testing.assert_allclose(single, action[0], rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(action) <= 2.0)  # Pendulum's torque bounds
    as_list, _ = model.predict(batch.tolist(), deterministic=True)
    np.testing.assert_array_equal(as_list, action)


def test_predict_deterministic_vs_stochastic(trained):
    model, _ = trained
    obs = observations(64)
    first, _ = model.predict(obs, deterministic=True)
    again, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, again)
    sampled, _ = model.predict(obs, deterministic=False)
    sampled_again, _ = model.predict(obs, deterministic=False)
    assert not np.array_equal(sampled, sampled_again)
    assert np.all(np.abs(sampled) <= 2.0)


@pytest.mark.parametrize("shape", [(4,), (2,), (5, 4), (2, 5, 3), ()])
def test_predict_rejects_wrong_shapes(trained, shape):
    model, _ = trained
    with pytest.raises(ValueError, match="predict expects an observation of shape"):
        model.predict(np.zeros(shape, dtype=np.float32))


def test_save_load_predict_identical(trained):
    model, path = trained
    loaded = CrossQ.load(path)
    obs = observations(32, seed=1)
    expected, _ = model.predict(obs, deterministic=True)
    got, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(got, expected)
    # everything is restored: networks, BRN statistics, temperature, optimizers, counters, config
    for key, value in model.loss_module.state_dict().items():
        assert torch.equal(loaded.loss_module.state_dict()[key], value), key
    assert loaded.update.num_updates == model.update.num_updates
    assert loaded.update.num_actor_updates == model.update.num_actor_updates
    saved_optim = model.update.optimizers.critic.state_dict()["state"]
    loaded_optim = loaded.update.optimizers.critic.state_dict()["state"]
    assert set(saved_optim) == set(loaded_optim)
    for index, state in saved_optim.items():
        assert torch.equal(loaded_optim[index]["exp_avg"], state["exp_avg"])
    assert loaded.num_timesteps == 150
    assert loaded.config.to_dict() == {**model.config.to_dict(), "device": "auto"}
    assert loaded.env is None and loaded.env_source == "Pendulum-v1"
    assert not loaded.actor.training


def test_load_then_keep_training(trained):
    _, path = trained
    loaded = CrossQ.load(path, env="Pendulum-v1", learning_starts=0)
    assert loaded.config.learning_starts == 0  # load kwargs override the saved hyperparameters
    before = loaded.update.num_updates
    loaded.learn(10)
    assert loaded.update.num_updates == before + 10  # no warm-up: updates from the first step
    no_env = CrossQ.load(path)
    with pytest.raises(ValueError, match="No env"):
        no_env.learn(10)


def test_get_set_parameters_round_trip(trained, tmp_path):
    model, path = trained
    fresh = CrossQ("MlpPolicy", "Pendulum-v1", seed=123, **TINY)
    obs = observations(16, seed=2)
    expected, _ = model.predict(obs, deterministic=True)
    assert not np.array_equal(fresh.predict(obs, deterministic=True)[0], expected)

    params = model.get_parameters()
    assert set(params) == {"actor", "critic", "loss_module"}
    fresh.set_parameters(params)
    np.testing.assert_array_equal(fresh.predict(obs, deterministic=True)[0], expected)
    for key, value in model.loss_module.state_dict().items():
        assert torch.equal(fresh.loss_module.state_dict()[key], value), key

    from_file = CrossQ("MlpPolicy", "Pendulum-v1", seed=7, **TINY)
    from_file.set_parameters(path)
    np.testing.assert_array_equal(from_file.predict(obs, deterministic=True)[0], expected)

    only_actor = CrossQ("MlpPolicy", "Pendulum-v1", seed=8, **TINY)
    only_actor.set_parameters({"actor": params["actor"]}, exact_match=False)
    np.testing.assert_array_equal(only_actor.predict(obs, deterministic=True)[0], expected)
    with pytest.raises(ValueError, match="exact_match"):
        only_actor.set_parameters({"actor": params["actor"]})
    with pytest.raises(ValueError, match=r"unknown objects \['policy'\]"):
        only_actor.set_parameters({"policy": params["actor"]}, exact_match=False)
    with pytest.raises(RuntimeError, match="Missing key"):  # load_state_dict's error for missing tensors, as sb3
        only_actor.set_parameters({"actor": params["actor"], "critic": params["critic"], "loss_module": {}})


def test_set_env_checks_spaces():
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    with pytest.raises(ValueError, match="observation spec differs"):
        model.set_env("InvertedPendulum-v5")  # 4-d observation vs 3
    with pytest.raises(ValueError, match="observation spec differs"):
        model.set_env("MountainCarContinuous-v0")
    other_bounds = lambda: gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), -1.0, 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="action spec differs"):
        model.set_env(other_bounds)
    same_spaces = lambda: gym.make("Pendulum-v1", max_episode_steps=20)  # noqa: E731
    model.set_env(same_spaces)
    model.learn(40)
    assert model.trainer.episodes.num_episodes == 2  # it trained on the new 20-step env


def test_accepts_gymnasium_and_torchrl_envs():
    from_gym = CrossQ("MlpPolicy", gym.make("Pendulum-v1"), **TINY)
    from_torchrl = CrossQ("MlpPolicy", make_env("Pendulum-v1"), **TINY)
    for model in (from_gym, from_torchrl):
        assert model.predict(np.zeros(3, dtype=np.float32), deterministic=True)[0].shape == (1,)


def test_seed_makes_runs_reproducible():
    def run():
        model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=20, seed=5, **TINY)
        model.learn(40)
        return model.loss_module.state_dict()

    first, second = run(), run()
    for key, value in first.items():
        assert torch.equal(second[key], value), key


def test_policy_kwargs_build_the_networks():
    model = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        policy_kwargs={"net_arch": {"pi": [16], "qf": [24, 24]}, "activation_fn": torch.nn.Tanh, "n_critics": 3},
        compile=False,
    )
    actor_linears = [m for m in model.actor.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in actor_linears] == [16, 1, 1]  # body, mean, log_std
    assert any(isinstance(m, torch.nn.Tanh) for m in model.actor.modules())
    batch = TensorDict(observation=torch.randn(5, 3), action=torch.zeros(5, 1), batch_size=[5])
    assert model.critic(batch)["state_action_value"].shape == (5, 3)
    assert model.config.critic_arch() == [24, 24]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"action_noise": object()}, ValueError, r"CrossQConfig\.action_noise"),
        ({"action_noise": "normal_-1"}, ValueError, r"CrossQConfig\.action_noise"),
        ({"use_sde_at_warmup": True}, ValueError, "use_sde_at_warmup only apply with use_sde=True"),
        ({"use_sde": True, "sde_sample_freq": 0}, ValueError, r"CrossQConfig\.sde_sample_freq"),
        ({"replay_buffer_class": object}, TypeError, "replay_buffer_class=object"),
        ({"prioritized_replay": True, "replay_buffer_class": TensorDictReplayBuffer}, ValueError, "not both"),
        ({"optimize_memory_usage": True, "replay_buffer_kwargs": {"storage": "memmap"}}, ValueError, "'memory'"),
        ({"policy_kwargs": {"use_expln": True}}, ValueError, "use_expln.*use_sde=True"),
        ({"policy_kwargs": {"full_std": False}}, ValueError, "full_std"),
        ({"replay_buffer_kwargs": {"handle_timeout_termination": True}}, ValueError, "handle_timeout_termination"),
        ({"batch_size": 0}, ValueError, r"CrossQConfig\.batch_size"),
    ],
)
def test_unsupported_options_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        CrossQ("MlpPolicy", "Pendulum-v1", **{**TINY, **kwargs})


def test_cnn_policy_is_refused():
    with pytest.raises(ValueError, match="CnnPolicy"):
        CrossQ("CnnPolicy", "Pendulum-v1", **TINY)


def test_discrete_action_env_is_refused():
    with pytest.raises(ValueError, match="continuous Box action space"):
        CrossQ("MlpPolicy", "CartPole-v1", **TINY)


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot make gymnasium env 'NoSuchEnv-v0'"):
        CrossQ("MlpPolicy", "NoSuchEnv-v0", **TINY)


def test_learn_rejects_non_positive_total_timesteps():
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    with pytest.raises(ValueError, match="total_timesteps"):
        model.learn(0)


class MatrixActionEnv(gym.Env):
    """A gymnasium env whose action is a 2x2 matrix."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        assert action.shape == (2, 2)
        return np.full(3, float(action.sum()) / 4, dtype=np.float32), -float(np.square(action).sum()), False, False, {}


@pytest.mark.parametrize("wrap", [lambda env: env, GymWrapper], ids=["gymnasium", "torchrl"])
def test_matrix_action_env_is_refused_naming_shape_and_fix(wrap):
    """A (2, 2) Box action is refused before any network is built (it would get the entropy target -2, not -4),
    through the facade and make_env alike, with the shape and the flattening fix in the message."""
    message = r"action shape \(2, 2\)\. Flatten it to \(4,\)"
    with pytest.raises(ValueError, match=message):
        CrossQ("MlpPolicy", wrap(MatrixActionEnv()), **TINY)
    with pytest.raises(ValueError, match=message):
        make_env(wrap(MatrixActionEnv()))


class FlatActions(gym.ActionWrapper):
    """The flattening the error message suggests."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Box(env.action_space.low.flatten(), env.action_space.high.flatten())

    def action(self, action):
        return action.reshape(self.env.action_space.shape)


def test_the_suggested_flattening_trains():
    """The fix the error message suggests gives a 4-dim action with the entropy target -4, and learn runs."""
    model = CrossQ("MlpPolicy", FlatActions(MatrixActionEnv()), learning_starts=50, **TINY)
    assert model.loss_module.target_entropy.item() == -4.0
    model.learn(120)
    assert model.predict(np.zeros(3, dtype=np.float32))[0].shape == (4,)

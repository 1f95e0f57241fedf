"""Exploration through the trainer, the facade and the CLI: gSDE matrices per rollout, gSDE at warm-up, action noise
on the collected actions, and the options with sb3-contrib's defaults."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from crossq_trl import CrossQ, CrossQConfig
from crossq_trl.cli import build_parser, config_kwargs

TINY = {"net_arch": [16, 16], "batch_size": 16, "compile": False, "seed": 0}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"train_freq": 4}, list(range(4, 40, 4))),  # a rollout is train_freq steps: one matrix each
        ({"train_freq": 4, "sde_sample_freq": 2}, list(range(2, 40, 2))),  # and every 2 steps within
        ({"train_freq": (1, "episode")}, [25]),  # a rollout is an episode (25 steps here)
    ],
    ids=["rollout", "sample_freq", "episode_rollout"],
)
def test_gsde_matrices_per_rollout_and_sample_freq(options, expected):
    """The matrix each acting step uses changes exactly at each rollout start and every sde_sample_freq steps
    within a rollout, as in sb3's collect_rollouts."""
    env = lambda: gym.make("Pendulum-v1", max_episode_steps=25)  # noqa: E731
    model = CrossQ("MlpPolicy", env, learning_starts=0, use_sde=True, **TINY, **options)
    head = model.actor.module[0].module
    acting_matrices, used = head.acting_matrices, []
    head.acting_matrices = lambda batch_size: used.append(acting_matrices(batch_size).clone()) or used[-1]
    model.learn(40)
    used = used[1:]  # the first call is the collector probing its policy when built, before training
    assert len(used) == 40
    assert [i for i in range(1, 40) if not torch.equal(used[i], used[i - 1])] == expected


def test_use_sde_at_warmup_acts_with_the_policy_before_learning_starts(monkeypatch):
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=50, use_sde=True, use_sde_at_warmup=True, **TINY)
    monkeypatch.setattr(model.env, "rand_action", lambda *args: pytest.fail("uniform random action at warm-up"))
    rollout, policies = model.env.buffered_rollout, []
    monkeypatch.setattr(
        model.env,
        "buffered_rollout",
        lambda td, length, policy=None: policies.append(policy) or rollout(td, length, policy),
    )
    model.learn(60)
    assert model.update.num_updates == 60 - 50 + 1
    assert len(policies) == 60 and None not in policies  # every step acted with the policy
    uniform = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=50, use_sde=True, **TINY)
    rollout, lengths = uniform.env.buffered_rollout, []
    monkeypatch.setattr(
        uniform.env,
        "buffered_rollout",
        lambda td, length, policy=None: lengths.append(length if policy is None else 0) or rollout(td, length, policy),
    )
    uniform.learn(50)
    assert sum(lengths) == 50


def test_action_noise_moves_collected_actions_within_bounds():
    """With a large Gaussian noise the collected actions pile up at the bounds; the deterministic action of
    predict stays noise-free."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=0, action_noise="normal_5.0", **TINY)
    model.learn(100)
    actions = model.replay_buffer[:]["action"]
    assert ((actions >= -2) & (actions <= 2)).all()
    assert (actions.abs() == 2).float().mean() > 0.7
    quiet = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=0, **TINY).learn(100)
    assert (quiet.replay_buffer[:]["action"].abs() == 2).float().mean() < 0.2


def test_exploration_options_have_sb3_contrib_defaults():
    config = CrossQConfig()
    assert config.action_noise is None and config.use_sde is False and config.use_sde_at_warmup is False
    assert (config.sde_sample_freq, config.log_std_init, config.use_expln, config.clip_mean) == (-1, -3.0, False, 2.0)


def test_exploration_flags_on_the_command_line():
    flags = ["train", "--use-sde", "--sde-sample-freq", "4", "--use-sde-at-warmup", "--log-std-init", "-2"]
    flags += ["--use-expln", "--clip-mean", "1.5", "--action-noise", "ou_0.2"]
    args = build_parser().parse_args(flags)
    config = CrossQConfig(**config_kwargs(args))
    assert config.use_sde and config.use_sde_at_warmup and config.use_expln
    assert (config.sde_sample_freq, config.log_std_init, config.clip_mean) == (4, -2, 1.5)
    assert config.action_noise == "ou_0.2"


def test_policy_kwargs_carry_the_gsde_head_options():
    model = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        use_sde=True,
        policy_kwargs={"log_std_init": -1.0, "use_expln": True, "clip_mean": 0.5},
        **TINY,
    )
    head = model.actor.module[0].module
    assert torch.equal(head.log_std, torch.full_like(head.log_std, -1.0))
    assert head.use_expln and head.clip_mean == 0.5


def test_periodic_evaluation_runs_the_noisy_policy_deterministically():
    """The trainer's evaluation goes through the collector's policy (action noise included): deterministic, it adds
    no noise and needs no ``is_init`` on the evaluation env."""
    model = CrossQ(
        "MlpPolicy", "Pendulum-v1", learning_starts=0, action_noise="ou_0.5", eval_freq=50, n_eval_episodes=1, **TINY
    )
    state = model.action_noise.state.clone()
    model.learn(50, callback=lambda m: setattr(m, "_noise_before_eval", m.action_noise.state.clone()))
    assert "eval/mean_reward" in model.trainer.report()
    assert torch.equal(model.action_noise.state, model._noise_before_eval)
    assert not torch.equal(model.action_noise.state, state)

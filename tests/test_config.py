"""CrossQConfig: sb3-contrib defaults, parsing of the compound options, and a clear error for every bad value."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from crossq_trl import CrossQConfig


def test_defaults_match_sb3_contrib_crossq():
    cfg = CrossQConfig()
    expected = {
        "learning_rate": 1e-3,
        "buffer_size": 1_000_000,
        "learning_starts": 100,
        "batch_size": 256,
        "gamma": 0.99,
        "train_freq": (1, "step"),
        "gradient_steps": 1,
        "ent_coef": "auto",
        "target_entropy": "auto",
        "policy_delay": 3,
        "batch_norm": True,
        "batch_norm_momentum": 0.01,
        "batch_norm_eps": 1e-3,
        "renorm_warmup_steps": 100_000,
        "n_critics": 2,
        "stats_window_size": 100,
    }
    assert {name: getattr(cfg, name) for name in expected} == expected
    assert cfg.actor_arch() == [256, 256]
    assert cfg.critic_arch() == [1024, 1024]
    assert cfg.activation() is nn.ReLU
    assert cfg.optimizer() is torch.optim.Adam
    assert cfg.entropy_coefficient() == (1.0, False)


@pytest.mark.parametrize(
    ("train_freq", "parsed"),
    [(4, (4, "step")), ((2, "episode"), (2, "episode")), ([3, "step"], (3, "step"))],
)
def test_train_freq_is_normalised(train_freq, parsed):
    assert CrossQConfig(train_freq=train_freq).train_freq == parsed


def test_ent_coef_variants():
    assert CrossQConfig(ent_coef="auto_0.1").entropy_coefficient() == (pytest.approx(0.1), False)
    assert CrossQConfig(ent_coef=0.05).entropy_coefficient() == (pytest.approx(0.05), True)
    assert CrossQConfig(ent_coef="auto").entropy_coefficient() == (1.0, False)


def test_learning_rate_schedules():
    linear = CrossQConfig(learning_rate="lin_0.002")
    assert linear.learning_rate_at(1.0) == pytest.approx(0.002)
    assert linear.learning_rate_at(0.25) == pytest.approx(0.0005)
    custom = CrossQConfig(learning_rate=lambda progress: 0.01 * progress + 0.001)
    assert custom.learning_rate_at(0.5) == pytest.approx(0.006)
    assert custom.to_dict()["learning_rate"] == pytest.approx(0.011)  # a callable is stored by its start value


def test_net_arch_forms():
    shared = CrossQConfig(net_arch=[64, 32])
    assert shared.actor_arch() == [64, 32] and shared.critic_arch() == [64, 32]
    split = CrossQConfig(net_arch={"pi": [16], "qf": [128, 128]})
    assert split.actor_arch() == [16] and split.critic_arch() == [128, 128]
    only_qf = CrossQConfig(net_arch={"qf": [8]})
    assert only_qf.actor_arch() == [256, 256] and only_qf.critic_arch() == [8]


def test_classes_by_name_or_type_and_to_dict():
    cfg = CrossQConfig(activation_fn="Tanh", optimizer_class=torch.optim.AdamW)
    assert cfg.activation() is nn.Tanh
    assert cfg.optimizer() is torch.optim.AdamW
    data = cfg.to_dict()
    assert data["optimizer_class"] == "adamw"
    assert set(data) == set(CrossQConfig.field_names())
    # the plain-data view rebuilds the same config
    assert CrossQConfig(**data).to_dict() == data
    assert CrossQConfig.field_names() == [field.name for field in dataclasses.fields(CrossQConfig)]


BAD_VALUES = [
    ("learning_rate", -1e-3),
    ("learning_rate", "lin_abc"),
    ("learning_rate", "fast"),
    ("learning_rate", lambda progress: -1.0),
    ("buffer_size", 0),
    ("buffer_size", 10.5),
    ("learning_starts", -1),
    ("batch_size", 0),
    ("batch_size", True),  # a bool is not a size
    ("gradient_steps", 2.0),
    ("gamma", 1.5),
    ("gamma", -0.1),
    ("gamma", "0.99"),
    ("train_freq", 0),
    ("train_freq", (1, "epoch")),
    ("train_freq", (0, "episode")),
    ("train_freq", (1, "step", 2)),
    ("gradient_steps", 0),
    ("gradient_steps", -2),
    ("gradient_steps", 1.5),
    ("ent_coef", "manual"),
    ("ent_coef", "auto_-1"),
    ("ent_coef", "auto_x"),
    ("ent_coef", 0.0),
    ("ent_coef", -0.1),
    ("target_entropy", "high"),
    ("policy_delay", 0),
    ("n_envs", 0),
    ("n_steps", 0),
    ("n_steps", 1.5),
    ("net_arch", []),
    ("net_arch", [64, 0]),
    ("net_arch", [64.5]),
    ("net_arch", {"pi": [64], "vf": [64]}),
    ("net_arch", {"pi": []}),
    ("activation_fn", "swishy"),
    ("batch_norm_momentum", 0.0),
    ("batch_norm_momentum", 1.5),
    ("batch_norm_eps", 0.0),
    ("renorm_warmup_steps", -1),
    ("n_critics", 0),
    ("optimizer_class", "lbfgs2"),
    ("device", "not-a-device"),
    ("stats_window_size", -1),
    ("replay_buffer_storage", "disk"),
    ("eval_freq", -5),
    ("n_eval_episodes", 0),
    ("precision", "fp16"),
    ("action_noise", "normal"),
    ("action_noise", "ou_0"),
    ("action_noise", object()),
    ("sde_sample_freq", 0),
    ("sde_sample_freq", -2),
    ("log_std_init", "low"),
    ("clip_mean", -1.0),
    ("use_sde_at_warmup", True),  # without use_sde
    ("prioritized_replay_alpha", -0.5),
    ("prioritized_replay_beta", "high"),
    ("variant", "sac"),
    ("critic_loss", "huber"),
    ("categorical_support", (5.0, -5.0, 101)),
    ("categorical_support", (-5.0, 5.0, 1)),
    ("target_entropy", "auto_x"),
    ("learning_rate", "lin_3e-4_3e-5_0"),
    ("collector_workers", -1),
    ("collector_workers", 1.5),
    ("collector_backend", "slurm"),
    ("ray_address", "auto"),  # without collector_workers
    ("weight_sync_interval", 0),
    ("features_extractor_class", "FlattenExtractor"),
    ("features_extractor_kwargs", ["features_dim", 8]),
    ("her_kwargs", "future"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_invalid_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"CrossQConfig\.{field}\b"):
        CrossQConfig(**{field: value})


def test_every_validated_field_has_a_bad_value_case():
    """The table above covers every field that is validated (the rest are free-form)."""
    free_form = {"batch_norm", "optimizer_kwargs", "seed", "compile", "replay_buffer_dir", "use_sde", "use_expln"}
    free_form |= {"optimize_memory_usage", "prioritized_replay"}
    free_form |= {"batch_renorm", "pre_activation_norm", "weight_norm", "weight_norm_head", "reward_normalization"}
    free_form |= {"share_features_extractor", "normalize_images"}
    covered = {field for field, _ in BAD_VALUES}
    assert covered | free_form == set(CrossQConfig.field_names())

"""Action noise: the Gaussian and Ornstein-Uhlenbeck processes (one state per env), objects with sb3's ActionNoise
protocol, and the module that adds noise to the squashed action, clips it and restarts the process per episode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from crossq_trl import (
    AdditiveActionNoise,
    GaussianActionNoise,
    OrnsteinUhlenbeckActionNoise,
    SB3ActionNoise,
    make_action_noise,
)

ACT_DIM = 2  # the conftest action spec
N_ENVS = 3


class CountingNoise:
    """sb3's ActionNoise protocol without sb3: a counter that ``reset`` puts back to zero."""

    def __init__(self, dim: int = ACT_DIM) -> None:
        self.dim, self.count, self.resets = dim, 0, 0

    def __call__(self) -> np.ndarray:
        self.count += 1
        return np.full(self.dim, 0.1 * self.count, dtype=np.float32)

    def reset(self) -> None:
        self.count, self.resets = 0, self.resets + 1


def step(module: AdditiveActionNoise, action: torch.Tensor, is_init: torch.Tensor) -> torch.Tensor:
    td = TensorDict({"action": action.clone(), "is_init": is_init.reshape(-1, 1)}, action.shape[:1])
    return module(td)["action"]


def test_gaussian_noise_statistics_and_independent_envs():
    noise = GaussianActionNoise(np.array([0.5, -0.5]), np.array([0.1, 0.2]), n_envs=N_ENVS)
    samples = torch.stack([noise.sample() for _ in range(4000)])
    assert samples.shape == (4000, N_ENVS, 2)
    torch.testing.assert_close(samples.mean((0, 1)), torch.tensor([0.5, -0.5]), atol=0.01, rtol=0)
    torch.testing.assert_close(samples.std((0, 1)), torch.tensor([0.1, 0.2]), atol=0.01, rtol=0)
    assert not torch.equal(samples[:, 0], samples[:, 1])


def test_ornstein_uhlenbeck_recursion_and_per_env_reset():
    """x <- x + theta (mu - x) dt + sigma sqrt(dt) N(0, 1) per env (sb3's formula); reset puts back the initial
    noise only where the mask is set."""
    mean, sigma = np.array([0.2, 0.0]), np.array([0.3, 0.3])
    noise = OrnsteinUhlenbeckActionNoise(mean, sigma, theta=0.15, dt=0.01, n_envs=N_ENVS)
    torch.manual_seed(1)
    states = [noise.sample() for _ in range(5)]
    torch.manual_seed(1)
    x = torch.zeros(N_ENVS, 2)
    for got in states:
        x = (
            x
            + 0.15 * (torch.tensor([0.2, 0.0]) - x) * 0.01
            + torch.tensor([0.3, 0.3]) * math.sqrt(0.01) * torch.randn(N_ENVS, 2)
        )
        torch.testing.assert_close(got, x)
    noise.reset(torch.tensor([False, True, False]))
    assert torch.equal(noise.state[1], torch.zeros(2))
    assert torch.equal(noise.state[0], x[0]) and torch.equal(noise.state[2], x[2])
    noise.reset()
    assert torch.equal(noise.state, torch.zeros(N_ENVS, 2))


def test_additive_noise_is_scaled_clipped_and_restarted_at_episode_start(action_spec):
    """The noise is added to the action scaled to [-1, 1] (times the half range), the result clipped to the bounds;
    an env's process restarts on the first step of its episode only; deterministic acting adds nothing."""
    low, high = action_spec.space.low, action_spec.space.high
    sb3_noise = SB3ActionNoise(CountingNoise(), action_dim=ACT_DIM, n_envs=N_ENVS)
    module = AdditiveActionNoise(sb3_noise, action_spec)
    action = low + (high - low) * torch.rand(N_ENVS, ACT_DIM)
    no_init = torch.zeros(N_ENVS, dtype=torch.bool)
    got = step(module, action, torch.ones(N_ENVS, dtype=torch.bool))
    torch.testing.assert_close(got, (action + (high - low) / 2 * 0.1).clamp(low, high))
    for _ in range(30):  # the counter drifts far outside the bounds: always clipped
        got = step(module, action, no_init)
        assert ((got >= low) & (got <= high)).all()
    assert torch.equal(got, high.expand_as(got))
    got = step(module, action, torch.tensor([False, True, False]))
    assert [process.count for process in sb3_noise.processes] == [32, 1, 32]
    torch.testing.assert_close(got[1], (action[1] + (high - low) / 2 * 0.1).clamp(low, high))
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(step(module, action, no_init), action)
    assert [process.count for process in sb3_noise.processes] == [32, 1, 32]


def test_additive_noise_needs_is_init_and_matching_envs(action_spec):
    module = AdditiveActionNoise(make_action_noise("normal_0.1", action_dim=ACT_DIM, n_envs=2), action_spec)
    with pytest.raises(ValueError, match="InitTracker"):
        module(TensorDict({"action": torch.zeros(2, ACT_DIM)}, [2]))
    with pytest.raises(ValueError, match="n_envs=3"):
        step(module, torch.zeros(3, ACT_DIM), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="dimensions"):
        AdditiveActionNoise(make_action_noise("normal_0.1", action_dim=5), action_spec)


def test_sb3_protocol_objects_one_copy_per_env_and_vectorized():
    """A plain protocol object gets one deep copy per env; one with a ``noises`` list of n_envs entries (sb3's
    VectorizedActionNoise) is used as is and reset by indices; a wrong shape is refused before any draw."""
    noise = SB3ActionNoise(CountingNoise(), action_dim=ACT_DIM, n_envs=2)
    assert noise.processes[0] is not noise.processes[1]
    noise.sample()
    noise.reset(torch.tensor([True, False]))
    assert [p.count for p in noise.processes] == [0, 1]

    class Vectorized:
        def __init__(self) -> None:
            self.noises, self.reset_indices = [CountingNoise(), CountingNoise()], []

        def __call__(self) -> np.ndarray:
            return np.stack([n() for n in self.noises])

        def reset(self, indices=None) -> None:
            self.reset_indices.append(indices)

    vectorized = Vectorized()
    wrapped = SB3ActionNoise(vectorized, action_dim=ACT_DIM, n_envs=2)
    assert wrapped.processes == [vectorized] and wrapped.sample().shape == (2, ACT_DIM)
    wrapped.reset(torch.tensor([False, True]))
    assert vectorized.reset_indices == [[1]]
    original = CountingNoise(dim=ACT_DIM + 1)
    with pytest.raises(ValueError, match="shape"):
        SB3ActionNoise(original, action_dim=ACT_DIM)
    assert original.count == 0
    with pytest.raises(ValueError, match="protocol"):
        make_action_noise(object(), action_dim=ACT_DIM)


def test_noise_state_round_trips_through_state_dict():
    for make in (
        lambda: OrnsteinUhlenbeckActionNoise(np.zeros(ACT_DIM), 0.3 * np.ones(ACT_DIM), n_envs=2),
        lambda: SB3ActionNoise(CountingNoise(), action_dim=ACT_DIM, n_envs=2),
    ):
        noise = make()
        for _ in range(5):
            noise.sample()
        copy = make()
        copy.load_state_dict(noise.state_dict())
        torch.manual_seed(4)
        want = noise.sample()
        torch.manual_seed(4)
        assert torch.equal(copy.sample(), want)


def test_noise_names():
    ou = make_action_noise("ou_0.2", action_dim=ACT_DIM, n_envs=2)
    assert isinstance(ou, OrnsteinUhlenbeckActionNoise) and torch.equal(ou.sigma, torch.full((ACT_DIM,), 0.2))
    assert (ou.theta, ou.dt, ou.n_envs) == (0.15, 0.01, 2)
    assert isinstance(make_action_noise("normal_0.1", action_dim=ACT_DIM), GaussianActionNoise)
    for bad in ("normal", "ou_-1", "uniform_0.1"):
        with pytest.raises(ValueError, match="normal_<sigma>"):
            make_action_noise(bad, action_dim=ACT_DIM)

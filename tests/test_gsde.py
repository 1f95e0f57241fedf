"""The gSDE actor head: noise theta(s)^T E held between resamples, the log-prob of the squashed action, clip_mean,
use_expln, the training-time noise of the loss, and acting without touching the BRN statistics."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from crossq_trl import ActingPolicy, CrossQLoss, make_crossq_actor, make_crossq_critic, reset_noise
from crossq_trl.modules.gsde import GSDEActorNet, expln, fresh_noise

OBS_DIM, ACT_DIM = 3, 2  # the conftest specs
N_ENVS = 4


def gsde_actor(observation_spec, action_spec, **kwargs):
    return make_crossq_actor(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8], use_sde=True, **kwargs
    )


def head(actor) -> GSDEActorNet:
    return actor.module[0].module


def pre_tanh_noise(actor, policy, obs: torch.Tensor) -> torch.Tensor:
    """The pre-tanh noise of one acting step: ``atanh`` of the scaled action minus the (clipped) mean."""
    low, high = policy.low, policy.low + 2 * policy.half_range
    action = policy(TensorDict({"observation": obs}, obs.shape[:1]))["action"]
    _, loc = head(actor).latent_and_mean(obs)
    return torch.atanh((action - low) / (high - low) * 2 - 1) - loc


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_noise_matrix_is_held_between_resamples_and_redrawn_every_sde_sample_freq(
    observation_spec, action_spec, compile
):
    """With sde_sample_freq=3 the exploration matrices (one per env) stay the same for 3 acting steps, then are
    redrawn; the noise on a fixed observation is theta(s)^T E with the held matrix; reset_noise redraws at the next
    step; one matrix per env."""
    actor = gsde_actor(observation_spec, action_spec, sde_sample_freq=3, log_std_init=0.0).eval()
    policy = ActingPolicy(actor, compile=compile)
    obs = torch.randn(N_ENVS, OBS_DIM)
    matrices = []
    for _ in range(7):
        policy(TensorDict({"observation": obs}, [N_ENVS]))
        matrices.append(head(actor).exploration_matrices.clone())
    assert matrices[0].shape == (N_ENVS, 8, ACT_DIM)
    assert all(torch.equal(m, matrices[0]) for m in matrices[:3])
    assert all(torch.equal(m, matrices[3]) for m in matrices[3:6])
    assert not torch.equal(matrices[0], matrices[3]) and not torch.equal(matrices[3], matrices[6])
    assert not torch.allclose(matrices[0][0], matrices[0][1])  # per env
    reset_noise(policy)
    before = head(actor).exploration_matrices.clone()
    noise = pre_tanh_noise(actor, policy, obs)
    after = head(actor).exploration_matrices
    assert not torch.equal(before, after)
    latent, _ = head(actor).latent_and_mean(obs)
    want = (latent.unsqueeze(-2) @ after).squeeze(-2)
    torch.testing.assert_close(noise, want, atol=1e-4, rtol=1e-4)


def test_default_sample_freq_draws_only_at_rollout_start(observation_spec, action_spec):
    """sde_sample_freq=-1: the matrix drawn at the first step stays for the whole rollout, however long; the plain
    ProbabilisticActor, under TorchRL's default random interaction, acts with it too."""
    actor = gsde_actor(observation_spec, action_spec).eval()
    obs = TensorDict({"observation": torch.randn(OBS_DIM)}, [])
    first = actor(obs.clone())["action"]
    matrix = head(actor).exploration_matrices.clone()
    for _ in range(50):
        assert torch.equal(actor(obs.clone())["action"], first)
    assert torch.equal(head(actor).exploration_matrices, matrix)
    reset_noise(actor)
    assert not torch.equal(actor(obs.clone())["action"], first)


def test_deterministic_acting_draws_nothing(observation_spec, action_spec):
    actor = gsde_actor(observation_spec, action_spec, sde_sample_freq=1).eval()
    policy = ActingPolicy(actor)
    obs = TensorDict({"observation": torch.randn(2, OBS_DIM)}, [2])
    policy(obs.clone())
    matrices, steps = head(actor).exploration_matrices.clone(), head(actor).steps_since_reset
    state = torch.get_rng_state()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(3):
            policy(obs.clone())
            actor(obs.clone())
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(head(actor).exploration_matrices, matrices) and head(actor).steps_since_reset == steps


def test_log_prob_of_the_squashed_action_by_hand(observation_spec, action_spec):
    """log pi(a|s) of the loss: N(loc, sigma^2) at the pre-tanh draw u = loc + theta^T E, sigma^2 = theta^2 @ std^2
    + 1e-6, minus log(1 - tanh(u)^2), for the action in [-1, 1] (the loss adds back the bounds' log half-range)."""
    actor = gsde_actor(observation_spec, action_spec, log_std_init=-1.0)
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    loss = CrossQLoss(actor, critic)
    obs = torch.randn(6, OBS_DIM)
    torch.manual_seed(5)
    with torch.no_grad():
        action, log_prob = loss._policy(TensorDict({"observation": obs}, [6]), training=False)
    torch.manual_seed(5)
    net = head(actor).eval()
    with torch.no_grad():
        latent, loc = net.latent_and_mean(obs)
        std = net.log_std.exp()
        matrix = std * torch.empty_like(std).normal_()
        u = loc + latent @ matrix
        sigma = torch.sqrt(latent.pow(2) @ std.pow(2) + 1e-6)
        gaussian = -0.5 * ((u - loc) / sigma) ** 2 - sigma.log() - 0.5 * math.log(2 * math.pi)
        want = (gaussian - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    low, high = action_spec.space.low, action_spec.space.high
    torch.testing.assert_close(action, low + (high - low) * (torch.tanh(u) + 1) / 2)
    torch.testing.assert_close(log_prob, want, rtol=1e-4, atol=1e-4)
    # the distribution scores any action by inverting the squashing, consistently
    with set_exploration_type(ExplorationType.RANDOM), fresh_noise(actor):
        dist = actor.get_dist(TensorDict({"observation": obs}, [6]))
    half_range = ((high - low) / 2).log().sum()
    torch.testing.assert_close(dist.log_prob(action) + half_range, want, rtol=1e-3, atol=1e-3)


def test_clip_mean_hard_tanh_before_squashing(observation_spec, action_spec):
    """The mean is clipped to [-clip_mean, clip_mean] with a hard tanh; clip_mean=0 leaves it unclipped."""
    actor = gsde_actor(observation_spec, action_spec, clip_mean=0.5).eval()
    unclipped = gsde_actor(observation_spec, action_spec, clip_mean=0.0).eval()
    unclipped.load_state_dict(actor.state_dict())
    with torch.no_grad():
        head(actor).mean.bias.fill_(3.0)
        head(unclipped).mean.bias.fill_(3.0)
    obs = torch.randn(5, OBS_DIM)
    _, loc = head(actor).latent_and_mean(obs)
    _, raw = head(unclipped).latent_and_mean(obs)
    assert (raw > 0.5).any()
    torch.testing.assert_close(loc, raw.clamp(-0.5, 0.5))
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        action = actor(TensorDict({"observation": obs}, [5]))["action"]
    low, high = action_spec.space.low, action_spec.space.high
    torch.testing.assert_close(action, low + (high - low) * (torch.tanh(raw.clamp(-0.5, 0.5)) + 1) / 2)
    with pytest.raises(ValueError, match="clip_mean"):
        gsde_actor(observation_spec, action_spec, clip_mean=-1.0)


def test_use_expln(observation_spec, action_spec):
    """expln: exp(x) for x <= 0, log1p(x + 1e-6) + 1 above (continuous at 0, linear-log growth); the head's std is
    exp or expln of log_std as selected."""
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    want = torch.tensor([math.exp(-2), math.exp(-0.5), 1.0, math.log1p(0.5 + 1e-6) + 1, math.log1p(3 + 1e-6) + 1])
    torch.testing.assert_close(expln(x), want)
    with_expln = head(gsde_actor(observation_spec, action_spec, log_std_init=1.0, use_expln=True))
    with_exp = head(gsde_actor(observation_spec, action_spec, log_std_init=1.0))
    torch.testing.assert_close(with_expln.std(), torch.full((8, ACT_DIM), math.log1p(1 + 1e-6) + 1))
    torch.testing.assert_close(with_exp.std(), torch.full((8, ACT_DIM), math.e))


def test_log_std_init_and_sb3_defaults(observation_spec, action_spec):
    net = head(gsde_actor(observation_spec, action_spec))
    assert torch.equal(net.log_std, torch.full((8, ACT_DIM), -3.0))
    assert (net.use_expln, net.clip_mean, net.sample_freq) == (False, 2.0, -1)


def test_sde_options_need_use_sde(observation_spec, action_spec):
    with pytest.raises(ValueError, match="use_sde=True"):
        make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, sde_sample_freq=4)
    with pytest.raises(ValueError, match="sde_sample_freq"):
        gsde_actor(observation_spec, action_spec, sde_sample_freq=0)
    with pytest.raises(ValueError, match="no gSDE actor"):
        reset_noise(make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec))


def test_loss_draws_its_own_noise_and_trains_log_std(observation_spec, action_spec):
    """In the loss each pass draws a fresh matrix (the acting ones stay as they were); the actor loss gives log_std
    a gradient through the reparameterised noise."""
    actor = gsde_actor(observation_spec, action_spec)
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    loss = CrossQLoss(actor, critic)
    obs = TensorDict({"observation": torch.randn(2, OBS_DIM)}, [2])
    ActingPolicy(actor)(obs.clone())
    matrices, steps = head(actor).exploration_matrices.clone(), head(actor).steps_since_reset
    batch = TensorDict({"observation": torch.randn(16, OBS_DIM)}, [16])
    loss_actor, _ = loss.actor_loss(batch)
    loss_actor.backward()
    assert head(actor).log_std.grad is not None and head(actor).log_std.grad.abs().sum() > 0
    assert torch.equal(head(actor).exploration_matrices, matrices) and head(actor).steps_since_reset == steps
    assert not head(actor).fresh_noise


def test_acting_and_resampling_never_move_brn_statistics(observation_spec, action_spec, ref):
    actor = gsde_actor(observation_spec, action_spec, sde_sample_freq=1)
    ref.randomize_brn(actor, steps=3)
    actor.train()  # even left in train mode
    buffers = {name: b.clone() for name, b in actor.named_buffers()}
    policy = ActingPolicy(actor)
    for _ in range(4):
        policy(TensorDict({"observation": torch.randn(3, OBS_DIM)}, [3]))
        reset_noise(policy)
    for name, buffer in actor.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_matrices_and_step_count_travel_with_the_state_dict(observation_spec, action_spec):
    actor = gsde_actor(observation_spec, action_spec, sde_sample_freq=5).eval()
    policy = ActingPolicy(actor)
    obs = TensorDict({"observation": torch.randn(N_ENVS, OBS_DIM)}, [N_ENVS])
    for _ in range(3):
        policy(obs.clone())
    copy = gsde_actor(observation_spec, action_spec, sde_sample_freq=5).eval()
    copy.load_state_dict(actor.state_dict())
    assert torch.equal(head(copy).exploration_matrices, head(actor).exploration_matrices)
    assert head(copy).steps_since_reset == 3
    torch.manual_seed(9)
    want = [policy(obs.clone())["action"] for _ in range(4)]
    torch.manual_seed(9)
    copy_policy = ActingPolicy(copy)
    for action in want:
        assert torch.equal(copy_policy(obs.clone())["action"], action)

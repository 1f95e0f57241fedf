"""Tests of the CrossQ actor and critic built from TorchRL specs."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torch import nn
from torch._dynamo.utils import counters
from torch._inductor.utils import fresh_cache
from torchrl.data import Bounded, Categorical, OneHot, Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from crossq_trl import (
    ActingPolicy,
    BatchRenorm1d,
    BatchRenormConfig,
    EnsembleQNet,
    make_crossq_actor,
    make_crossq_critic,
)
from crossq_trl.modules import EnsembleLinear, GaussianActorNet
from crossq_trl.modules.compiled import compile_method

OBS_DIM, ACT_DIM = 3, 2


def actor_net(actor) -> GaussianActorNet:
    return next(m for m in actor.modules() if isinstance(m, GaussianActorNet))


def critic_net(critic) -> EnsembleQNet:
    return next(m for m in critic.modules() if isinstance(m, EnsembleQNet))


def obs_td(*batch: int) -> TensorDict:
    return TensorDict({"observation": torch.randn(*batch, OBS_DIM)}, list(batch))


def squash(loc, low, high):
    """The rescaled tanh: low + (tanh(loc) + 1) / 2 * (high - low)."""
    return low + (torch.tanh(loc) + 1) / 2 * (high - low)


@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_actor_and_critic_outputs_follow_the_specs(observation_spec, action_spec, batch):
    """Actor writes loc, scale and an in-bounds action [*batch, act_dim]; critic writes [*batch, n_critics]."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8], n_critics=3)
    td = obs_td(*batch)
    actor(td)
    for key in ("loc", "scale", "action"):
        assert td[key].shape == (*batch, ACT_DIM), key
    low, high = action_spec.space.low, action_spec.space.high
    assert ((td["action"] >= low) & (td["action"] <= high)).all()
    assert action_spec.is_in(td["action"])
    assert (td["scale"] > 0).all()
    critic(td)
    assert td["state_action_value"].shape == (*batch, 3)
    assert td["state_action_value"].dtype == torch.float32


def test_actor_and_critic_layout(observation_spec, action_spec):
    """Layout is BRN -> [Linear -> ReLU -> BRN] x len(net_arch) -> heads, with the sizes of net_arch."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6])
    net = actor_net(actor)
    types = [type(m) for m in net.body]
    assert types == [BatchRenorm1d, nn.Linear, nn.ReLU, BatchRenorm1d, nn.Linear, nn.ReLU, BatchRenorm1d]
    assert [m.num_features for m in net.body if isinstance(m, BatchRenorm1d)] == [OBS_DIM, 8, 6]
    assert [(m.in_features, m.out_features) for m in net.body if isinstance(m, nn.Linear)] == [(OBS_DIM, 8), (8, 6)]
    for head in (net.mean, net.log_std):
        assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (6, ACT_DIM)

    critic = make_crossq_critic(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6], n_critics=2
    )
    qnet = critic_net(critic)
    types = [type(m) for m in qnet.body]
    assert types == [BatchRenorm1d, EnsembleLinear, nn.ReLU, BatchRenorm1d, EnsembleLinear, nn.ReLU, BatchRenorm1d]
    brns = [m for m in qnet.body if isinstance(m, BatchRenorm1d)]
    assert [(m.num_features, m.ensemble_size) for m in brns] == [(OBS_DIM + ACT_DIM, 2), (8, 2), (6, 2)]
    linears = [m for m in qnet.body if isinstance(m, EnsembleLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(OBS_DIM + ACT_DIM, 8), (8, 6)]
    assert (qnet.head.ensemble_size, qnet.head.in_features, qnet.head.out_features) == (2, 6, 1)
    assert list(critic.in_keys) == ["observation", "action"] and list(critic.out_keys) == ["state_action_value"]


def test_batch_norm_false_removes_brn(observation_spec, action_spec):
    """batch_norm=False leaves Linear/ReLU only, in actor and critic."""
    actor = make_crossq_actor(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6], batch_norm=False
    )
    critic = make_crossq_critic(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6], batch_norm=False
    )
    assert [type(m) for m in actor_net(actor).body] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert [type(m) for m in critic_net(critic).body] == [EnsembleLinear, nn.ReLU, EnsembleLinear, nn.ReLU]
    assert not any(isinstance(m, BatchRenorm1d) for m in [*actor.modules(), *critic.modules()])


@pytest.mark.parametrize("context", ["exploration_type", "interaction_type"])
def test_deterministic_action_is_rescaled_tanh_of_mean(observation_spec, action_spec, ref, context):
    """In deterministic mode (eval) the action is low + (tanh(loc)+1)/2*(high-low), loc the mean head's output."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    ref.randomize_brn(actor)
    actor.eval()
    obs = torch.randn(6, OBS_DIM) * 2
    td = TensorDict({"observation": obs}, [6])
    mode = (
        set_exploration_type(ExplorationType.DETERMINISTIC)
        if context == "exploration_type"
        else set_interaction_type(InteractionType.DETERMINISTIC)
    )
    with mode, torch.no_grad():
        actor(td)
    loc, scale = ref.actor(actor_net(actor), obs, training=False)
    low, high = action_spec.space.low, action_spec.space.high
    torch.testing.assert_close(td["loc"], loc)
    torch.testing.assert_close(td["scale"], scale)
    torch.testing.assert_close(td["action"], squash(loc, low, high))
    assert not torch.allclose(td["action"], torch.tanh(loc), atol=1e-2)  # the bounds [-2, 1] x [-2, 3] are applied


def test_actor_is_stochastic_by_default(observation_spec, action_spec):
    """Without a deterministic context two calls on the same observation draw different actions."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8]).eval()
    td = obs_td(4)
    first = actor(td.clone())["action"]
    second = actor(td.clone())["action"]
    assert not torch.allclose(first, second)


def test_log_std_is_clipped(observation_spec, action_spec):
    """A huge log_std head output gives scale exp(2); a hugely negative one gives exp(-20)."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8]).eval()
    net = actor_net(actor)
    for bias, expected in ((1e4, math.exp(2.0)), (-1e4, math.exp(-20.0))):
        with torch.no_grad():
            net.log_std.bias.fill_(bias)
        td = actor(obs_td(5))
        torch.testing.assert_close(td["scale"], torch.full((5, ACT_DIM), expected))


def test_eval_actor_and_critic_accept_one_unbatched_observation(observation_spec, action_spec, ref):
    """In eval mode the actor maps one [obs_dim] observation to one [act_dim] action (the critic to [n_critics])."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8])
    ref.randomize_brn(actor)
    ref.randomize_brn(critic)
    actor.eval(), critic.eval()
    obs = torch.randn(OBS_DIM)
    td = TensorDict({"observation": obs}, [])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        actor(td)
    assert td["action"].shape == (ACT_DIM,)
    loc, _ = ref.actor(actor_net(actor), obs, training=False)
    torch.testing.assert_close(td["action"], squash(loc, action_spec.space.low, action_spec.space.high))
    critic(td)
    assert td["state_action_value"].shape == (2,)
    expected = ref.critic(critic_net(critic), obs, td["action"], training=False)
    torch.testing.assert_close(td["state_action_value"], expected)


def test_train_mode_actor_refuses_unbatched_observation(observation_spec, action_spec):
    """Train-mode BRN cannot take statistics of one unbatched sample: clear ValueError, not NaN."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8]).train()
    with pytest.raises(ValueError, match="eval"):
        actor(TensorDict({"observation": torch.randn(OBS_DIM)}, []))


def test_ensemble_members_differ_at_init(observation_spec, action_spec):
    """Every EnsembleLinear of the critic starts with different weights and biases in each member."""
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    linears = [m for m in critic.modules() if isinstance(m, EnsembleLinear)]
    assert len(linears) == 3
    for layer in linears:
        assert not torch.allclose(layer.weight[0], layer.weight[1])
        assert not torch.allclose(layer.bias[0], layer.bias[1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("past_warmup", [False, True])
def test_ensemble_output_equals_each_member_by_hand(observation_spec, action_spec, ref, training, past_warmup):
    """The batched ensemble equals each member computed alone from its own slice of weights and BRN buffers."""
    config = BatchRenormConfig(warmup_steps=3)
    critic = make_crossq_critic(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6], n_critics=3, batch_renorm=config
    )
    ref.randomize_brn(critic, steps=5 if past_warmup else 0)
    critic.train(training)
    qnet = critic_net(critic)
    obs, act = torch.randn(7, OBS_DIM), action_spec.rand((7,))
    expected = ref.critic(qnet, obs, act, training=training)
    out = critic(TensorDict({"observation": obs, "action": act}, [7]))["state_action_value"]
    torch.testing.assert_close(out, expected)


def test_gradient_of_member_zero_moves_only_member_zero(observation_spec, action_spec):
    """Backprop of member 0's Q-value gives zero gradient to every other member; an SGD step leaves them unchanged."""
    critic = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6])
    td = TensorDict({"observation": torch.randn(9, OBS_DIM), "action": action_spec.rand((9,))}, [9])
    critic(td)["state_action_value"][..., 0].square().sum().backward()
    before = {name: p.detach().clone() for name, p in critic.named_parameters()}
    torch.optim.SGD(critic.parameters(), lr=0.1).step()
    for name, p in critic.named_parameters():
        assert p.shape[0] == 2, name  # every parameter is stacked on the ensemble axis
        assert torch.count_nonzero(p.grad[1]) == 0, name
        torch.testing.assert_close(p[1], before[name][1], rtol=0, atol=0)
        if "weight" in name:
            assert torch.count_nonzero(p.grad[0]) > 0, name
            assert not torch.equal(p[0], before[name][0]), name


def test_brn_statistics_are_per_member(observation_spec, action_spec, ref):
    """A train pass moves each member's BRN statistics toward that member's own activations; eval buffers of member 1
    affect only member 1's output."""
    momentum = 0.1
    config = BatchRenormConfig(momentum=momentum)
    critic = make_crossq_critic(
        observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 6], batch_renorm=config
    )
    qnet = critic_net(critic)
    brns = [m for m in qnet.body if isinstance(m, BatchRenorm1d)]
    obs, act = torch.randn(10, OBS_DIM), action_spec.rand((10,))
    inputs = []
    with torch.no_grad():
        ref.critic(qnet, obs, act, training=True, brn_inputs=inputs)
    critic(TensorDict({"observation": obs, "action": act}, [10]))
    for layer, member_inputs in zip(brns, inputs, strict=True):
        for e, x in enumerate(member_inputs):
            mean = x.mean(0)
            var = ((x - mean) ** 2).mean(0)
            torch.testing.assert_close(layer.running_mean[e], momentum * mean)
            torch.testing.assert_close(layer.running_var[e], (1 - momentum) + momentum * var)
    assert not torch.allclose(brns[1].running_mean[0], brns[1].running_mean[1])

    critic.eval()
    td = TensorDict({"observation": obs, "action": act}, [10])
    q_before = critic(td.clone())["state_action_value"]
    with torch.no_grad():
        brns[1].running_mean[1] += 1.0
    q_after = critic(td.clone())["state_action_value"]
    torch.testing.assert_close(q_after[:, 0], q_before[:, 0], rtol=0, atol=0)
    assert not torch.allclose(q_after[:, 1], q_before[:, 1])


def test_ensemble_linear_init_like_nn_linear():
    """EnsembleLinear weights and biases are uniform in ±1/sqrt(fan_in), as nn.Linear's, independently per member."""
    fan_in, fan_out, members = 64, 32, 4
    layer = EnsembleLinear(members, fan_in, fan_out)
    bound = 1 / math.sqrt(fan_in)
    reference = nn.Linear(fan_in, fan_out)
    for w in (layer.weight, reference.weight):
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.95 * bound
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.06 * bound / math.sqrt(3)
        assert abs(w.mean().item()) < 0.05 * bound
    assert layer.weight.shape == (members, fan_out, fan_in)
    assert layer.bias.shape == (members, fan_out)
    assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0.8 * bound
    assert not torch.allclose(layer.weight[0], layer.weight[1])
    x = torch.randn(members, 5, fan_in)
    expected = torch.stack([x[e] @ layer.weight[e].T + layer.bias[e] for e in range(members)])
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("fan_in", "fan_out"), [(3, 7), (7, 3)])
def test_feature_major_ensemble_linear_gradients_equal_per_member_linears(fan_in, fan_out, bias):
    """Feature-major EnsembleLinear (a widening one computes its weight gradient as (x g^T)^T) gives each member the
    output, weight, bias and input gradients of its own nn.Linear, in float64, with autograd and with torch.func."""
    members, samples = 2, 6
    layer = EnsembleLinear(members, fan_in, fan_out, feature_dim=1, bias=bias).double()
    x = torch.randn(members, fan_in, samples, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(members, fan_out, samples, dtype=torch.float64)
    (layer(x) * upstream).sum().backward()
    grads = torch.func.grad(lambda params: (torch.func.functional_call(layer, params, (x,)) * upstream).sum())(
        {name: p.detach() for name, p in layer.named_parameters()}
    )
    for e in range(members):
        reference = nn.Linear(fan_in, fan_out, bias=bias).double()
        with torch.no_grad():
            reference.weight.copy_(layer.weight[e])
            if bias:
                reference.bias.copy_(layer.bias[e])
        member_x = x[e].detach().T.clone().requires_grad_()
        out = reference(member_x)
        torch.testing.assert_close(layer(x)[e].T, out)
        (out * upstream[e].T).sum().backward()
        torch.testing.assert_close(x.grad[e].T, member_x.grad)
        for name, param in reference.named_parameters():
            torch.testing.assert_close(getattr(layer, name).grad[e], param.grad)
            torch.testing.assert_close(grads[name][e], param.grad)
    # composes with vmap as the plain layer did: per-input weight gradients of a stack of inputs
    inputs = torch.stack([x.detach(), 2 * x.detach()])
    per_input = torch.func.vmap(
        torch.func.grad(lambda params, one: torch.func.functional_call(layer, params, (one,)).square().sum()),
        in_dims=(None, 0),
    )({name: p.detach() for name, p in layer.named_parameters()}, inputs)
    for i, one in enumerate(inputs):
        layer.zero_grad()
        layer(one).square().sum().backward()
        torch.testing.assert_close(per_input["weight"][i], layer.weight.grad)


class _WideningStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = EnsembleLinear(2, 3, 8, feature_dim=1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).square().sum()


def test_compiled_widening_layer_is_stored_in_and_loaded_from_aot_autograd_cache():
    """A compiled step holding the widening layer's autograd.Function goes into AOTAutograd's on-disk cache (torch
    leaves such graphs out by default: a bypass), and compiling it again after Dynamo's reset, as a new process
    would, loads it from there and gives the eager gradients."""
    step, x = _WideningStep(), torch.randn(2, 3, 5)
    step.loss(x).backward()
    want = [p.grad.clone() for p in step.parameters()]
    cache = []
    with fresh_cache():
        for _ in range(2):
            torch._dynamo.reset()
            counters.clear()
            step.zero_grad()
            compile_method(step.loss, ("x",), device=torch.device("cpu"))(x).backward()
            cache.append(dict(counters["aot_autograd"]))
            for param, grad in zip(step.parameters(), want, strict=True):
                torch.testing.assert_close(param.grad, grad)
    assert "autograd_cache_bypass" not in cache[0] and cache[0]["autograd_cache_saved"] == 1
    assert cache[1]["autograd_cache_hit"] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Categorical(4), "continuous, bounded"),
        (OneHot(4), "continuous, bounded"),
        (Unbounded((ACT_DIM,)), "continuous, bounded"),
        (Bounded(-1, 1, (ACT_DIM,), dtype=torch.int64), "continuous, bounded"),
        (Bounded(torch.tensor([-1.0, -math.inf]), torch.tensor([1.0, 1.0]), (ACT_DIM,)), "finite action bounds"),
        (Bounded(-1.0, 1.0, (2, 2)), r"action shape \(2, 2\)\. Flatten it to \(4,\)"),
    ],
)
def test_unsupported_action_spec_raises(observation_spec, spec, message):
    """Discrete, one-hot, unbounded, infinite-bound or matrix action specs raise ValueError saying what CrossQ
    needs."""
    with pytest.raises(ValueError, match=message):
        make_crossq_actor(observation_spec=observation_spec, action_spec=spec, net_arch=[4])
    with pytest.raises(ValueError, match=message):
        make_crossq_critic(observation_spec=observation_spec, action_spec=spec, net_arch=[4])


def test_bad_net_arch_raises(observation_spec, action_spec):
    """An empty or non-positive net_arch is rejected with ValueError."""
    for net_arch in ([], [8, 0]):
        with pytest.raises(ValueError, match="net_arch"):
            make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=net_arch)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_acting_policy_acts_as_the_actor(observation_spec, action_spec, ref, compile):
    """ActingPolicy's deterministic action is the actor's (rescaled tanh of the mean head); its random actions are
    the squashed Gaussian of the actor's (loc, scale) with the torch generator's noise, in the bounds; acting never
    moves the BRN statistics, even with the actor left in train mode."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[8, 8])
    ref.randomize_brn(actor, steps=5)
    policy = ActingPolicy(actor, compile=compile)
    obs = torch.randn(5, OBS_DIM)
    actor.eval()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        want = actor(TensorDict({"observation": obs}, [5]))["action"]
        got = policy(TensorDict({"observation": obs}, [5]))["action"]
    torch.testing.assert_close(got, want)

    actor.train()
    buffers = {name: b.clone() for name, b in actor.named_buffers()}
    torch.manual_seed(3)
    got = policy(TensorDict({"observation": obs}, [5]))["action"]
    torch.manual_seed(3)
    noise = torch.randn(5, ACT_DIM)
    loc, scale = ref.actor(actor.module[0].module, obs, training=False)
    low, high = action_spec.space.low, action_spec.space.high
    torch.testing.assert_close(got, low + (high - low) * (torch.tanh(loc + scale * noise) + 1) / 2)
    assert actor.training  # its mode is given back
    for name, buffer in actor.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_critic_sees_the_action_scaled_to_unit_bounds(observation_spec):
    """Without input normalization (batch_norm=False) a critic on bounds [0, 4] x [-3, -1] gives at env action
    low + (u + 1) (high - low) / 2 exactly what the same weights give on [-1, 1] bounds at u."""
    low, high = torch.tensor([0.0, -3.0]), torch.tensor([4.0, -1.0])
    critics = {}
    for name, spec in {"env": Bounded(low, high, (ACT_DIM,)), "unit": Bounded(-1.0, 1.0, (ACT_DIM,))}.items():
        torch.manual_seed(0)
        critics[name] = make_crossq_critic(
            observation_spec=observation_spec, action_spec=spec, net_arch=[8], batch_norm=False
        )
    unit_action = torch.rand(5, ACT_DIM) * 2 - 1
    obs = torch.randn(5, OBS_DIM)
    env_action = low + (unit_action + 1) * (high - low) / 2
    q_env = critics["env"](TensorDict({"observation": obs, "action": env_action}, [5]))["state_action_value"]
    q_unit = critics["unit"](TensorDict({"observation": obs, "action": unit_action}, [5]))["state_action_value"]
    torch.testing.assert_close(q_env, q_unit)
    net = critic_net(critics["env"])
    by_hand = net.head(net.body(torch.cat([obs, unit_action], -1).T.expand(2, -1, -1))).squeeze(1).T
    torch.testing.assert_close(q_env, by_hand)
    assert "action_center" not in critics["env"].state_dict()  # rebuilt from the spec, not saved

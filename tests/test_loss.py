"""Tests of crossq_trl.CrossQLoss: losses against hand computations, gradient routing, BRN modes, TorchRL parity."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
import torchrl.objectives
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import BatchRenorm1d as TorchRLBatchRenorm1d
from torchrl.modules.distributions import NormalParamExtractor, TanhNormal
from torchrl.modules.tensordict_module.actors import ProbabilisticActor, ValueOperator
from torchrl.modules.tensordict_module.common import SafeModule

from crossq_trl import BatchRenorm1d, BatchRenormConfig, CrossQLoss, EnsembleQNet, make_crossq_actor, make_crossq_critic
from crossq_trl.modules import GaussianActorNet

OBS_DIM, ACT_DIM = 3, 2
GAMMA = 0.99  # TorchRL's default TD0 discount


def build(observation_spec, action_spec, *, batch_norm=True, warmup_steps=100_000, momentum=0.01, **loss_kwargs):
    """A tiny CrossQ setup: actor [5], critic ensemble [6] x 2."""
    config = BatchRenormConfig(warmup_steps=warmup_steps, momentum=momentum)
    kwargs = {"observation_spec": observation_spec, "action_spec": action_spec, "batch_norm": batch_norm}
    actor = make_crossq_actor(net_arch=[5], batch_renorm=config, **kwargs)
    critic = make_crossq_critic(net_arch=[6], batch_renorm=config, **kwargs)
    return CrossQLoss(actor, critic, **loss_kwargs), actor, critic


def actor_net(actor) -> GaussianActorNet:
    return next(m for m in actor.modules() if isinstance(m, GaussianActorNet))


def critic_net(critic) -> EnsembleQNet:
    return next(m for m in critic.modules() if isinstance(m, EnsembleQNet))


def brn_layers(module) -> list[BatchRenorm1d]:
    return [m for m in module.modules() if isinstance(m, BatchRenorm1d)]


def buffers(module) -> dict[str, torch.Tensor]:
    return {name: buf.clone() for name, buf in module.named_buffers()}


def assert_stats_moved_toward(layer, data, old_mean, old_var, momentum):
    """``layer``'s running stats are one momentum step from ``(old_mean, old_var)`` toward ``data``'s biased moments."""
    mean = data.mean(0)
    var = ((data - mean) ** 2).mean(0)
    torch.testing.assert_close(layer.running_mean, old_mean + momentum * (mean - old_mean))
    torch.testing.assert_close(layer.running_var, old_var + momentum * (var - old_var))


def tanh_normal(loc, scale, eps, low, high):
    """Reparameterised TanhNormal sample rescaled to [low, high] and the log-prob of the squashed action in [-1, 1]
    (SAC/CrossQ's convention: no -sum(log((high - low) / 2)) term from the rescaling), written out by hand."""
    u = loc + scale * eps
    action = low + (torch.tanh(u) + 1) / 2 * (high - low)
    normal_log_prob = -0.5 * ((u - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
    log_prob = normal_log_prob.sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    return action, log_prob


def expected_qvalue_loss(ref, actor, critic, td, eps_next, *, alpha, low, high, gamma=GAMMA, joint=True):
    """CrossQ critic loss by hand: a' from the eval-mode actor, one train-mode critic pass on [s, s']
    (``joint=False``: two separate passes, the mistake CrossQ avoids)."""
    with torch.no_grad():
        next_obs = td["next", "observation"]
        loc, scale = ref.actor(actor_net(actor), next_obs, training=False)
        next_action, next_log_prob = tanh_normal(loc, scale, eps_next, low, high)
        obs = torch.cat([td["observation"], next_obs])
        act = torch.cat([td["action"], next_action])
        batch = td.shape[0]
        if joint:
            q = ref.critic(critic_net(critic), obs, act, training=True)
            q_pred, q_next = q[:batch], q[batch:]
        else:
            q_pred = ref.critic(critic_net(critic), obs[:batch], act[:batch], training=True)
            q_next = ref.critic(critic_net(critic), obs[batch:], act[batch:], training=True)
        reward = td["next", "reward"].squeeze(-1)
        not_terminated = 1.0 - td["next", "terminated"].squeeze(-1).float()
        y = reward + gamma * not_terminated * (q_next.min(-1).values - alpha * next_log_prob)
        loss = (0.5 * (q_pred - y[:, None]) ** 2).sum(-1).mean()
        td_error = (q_pred - y[:, None]).abs().max(-1).values
    unit_act = 2 * (act - low) / (high - low) - 1  # the critic sees actions in [-1, 1]
    return {"loss": loss, "td_error": td_error, "y": y, "joint_input": torch.cat([obs, unit_act], -1)}


def expected_actor_loss(ref, actor, critic, td, eps, *, alpha, log_alpha, low, high):
    """CrossQ actor and temperature losses by hand: train-mode actor, eval-mode critic."""
    with torch.no_grad():
        loc, scale = ref.actor(actor_net(actor), td["observation"], training=True)
        action, log_prob = tanh_normal(loc, scale, eps, low, high)
        q = ref.critic(critic_net(critic), td["observation"], action, training=False)
        loss_actor = (alpha * log_prob - q.min(-1).values).mean()
        loss_alpha = -(log_alpha * (log_prob - ACT_DIM)).mean()
    return {"loss_actor": loss_actor, "loss_alpha": loss_alpha, "log_prob": log_prob}


def draw(seed, batch):
    """The Normal noise the loss draws after torch.manual_seed(seed): a' noise first, then the actor-loss noise."""
    torch.manual_seed(seed)
    return torch.randn(batch, ACT_DIM), torch.randn(batch, ACT_DIM)


TERMINATED = torch.tensor([[False], [True], [False], [False], [True], [False]])


@pytest.mark.parametrize(
    ("loss_kwargs", "alpha"),
    [
        ({"alpha_init": 0.7}, 0.7),
        ({"alpha_init": 10.0, "max_alpha": 2.0}, 2.0),
        ({"alpha_init": 0.01, "min_alpha": 0.1}, 0.1),
    ],
)
def test_losses_equal_hand_computation_without_brn(observation_spec, action_spec, make_batch, ref, loss_kwargs, alpha):
    """loss(td): critic, actor and alpha losses, alpha, entropy and td_error equal the SAC/CrossQ formulas by hand
    (reproducing the TanhNormal noise), with alpha clamped to [min_alpha, max_alpha].

    The clamp bounds the alpha used in the losses; the temperature loss reads the raw log_alpha parameter
    (torchrl instead clamps log_alpha.data in place)."""
    loss, actor, critic = build(observation_spec, action_spec, batch_norm=False, **loss_kwargs)
    td = make_batch(6, terminated=TERMINATED)
    low, high = action_spec.space.low, action_spec.space.high
    eps_next, eps_cur = draw(11, 6)
    q_expected = expected_qvalue_loss(ref, actor, critic, td, eps_next, alpha=alpha, low=low, high=high)
    log_alpha = math.log(loss_kwargs["alpha_init"])
    a_expected = expected_actor_loss(
        ref, actor, critic, td, eps_cur, alpha=alpha, log_alpha=log_alpha, low=low, high=high
    )

    torch.manual_seed(11)
    out = loss(td)
    torch.testing.assert_close(out["loss_qvalue"], q_expected["loss"])
    torch.testing.assert_close(out["loss_actor"], a_expected["loss_actor"])
    torch.testing.assert_close(out["loss_alpha"], a_expected["loss_alpha"])
    torch.testing.assert_close(out["alpha"], torch.tensor(alpha))
    torch.testing.assert_close(out["entropy"], -a_expected["log_prob"].mean())
    torch.testing.assert_close(td["td_error"], q_expected["td_error"])

    # the three methods called one by one give the same numbers
    torch.manual_seed(11)
    loss_qvalue, metadata = loss.qvalue_loss(td)
    torch.testing.assert_close(loss_qvalue, q_expected["loss"])
    torch.testing.assert_close(metadata["td_error"], q_expected["td_error"])
    torch.manual_seed(5)
    loss_actor, metadata = loss.actor_loss(td)
    eps_first, _ = draw(5, 6)  # actor_loss draws once: the first draw after the seed
    a_expected = expected_actor_loss(
        ref, actor, critic, td, eps_first, alpha=alpha, log_alpha=log_alpha, low=low, high=high
    )
    torch.testing.assert_close(loss_actor, a_expected["loss_actor"])
    torch.testing.assert_close(metadata["log_prob"], a_expected["log_prob"])
    torch.testing.assert_close(loss.alpha_loss(metadata["log_prob"]), a_expected["loss_alpha"])


@pytest.mark.parametrize("past_warmup", [False, True])
def test_qvalue_loss_uses_joint_batch_statistics(observation_spec, action_spec, make_batch, ref, past_warmup):
    """With BRN, the critic loss is one train-mode pass on [s, s'] (joint batch statistics; renorm r, d once past
    warm-up), a' from the eval-mode actor; the critic's BRN stats move with the joint moments, the actor's stay."""
    momentum = 0.1
    loss, actor, critic = build(observation_spec, action_spec, warmup_steps=3, momentum=momentum, alpha_init=0.5)
    ref.randomize_brn(actor, steps=0)
    ref.randomize_brn(critic, steps=5 if past_warmup else 0)
    actor.train()  # the loss must still sample a' with the actor in eval mode
    critic.eval()  # ... and still run the critic in train mode
    td = make_batch(6)
    td["next", "observation"] = td["next", "observation"] * 2 + 1  # s' distributed unlike s
    low, high = action_spec.space.low, action_spec.space.high
    eps_next, _ = draw(3, 6)
    expected = expected_qvalue_loss(ref, actor, critic, td, eps_next, alpha=0.5, low=low, high=high)
    separate = expected_qvalue_loss(ref, actor, critic, td, eps_next, alpha=0.5, low=low, high=high, joint=False)
    assert not torch.allclose(separate["loss"], expected["loss"], rtol=1e-3)  # the joint statistics matter here
    first = brn_layers(critic)[0]
    old_mean, old_var = first.running_mean.clone(), first.running_var.clone()
    actor_buffers = buffers(actor)

    torch.manual_seed(3)
    loss_qvalue, metadata = loss.qvalue_loss(td)
    torch.testing.assert_close(loss_qvalue, expected["loss"])
    torch.testing.assert_close(metadata["td_error"], expected["td_error"])

    # [2B, obs + act], the same input for every member
    assert_stats_moved_toward(first, expected["joint_input"], old_mean, old_var, momentum)
    assert all(int(layer.steps) == (6 if past_warmup else 1) for layer in brn_layers(critic))
    for name, buf in actor.named_buffers():
        assert torch.equal(buf, actor_buffers[name]), name


def test_actor_loss_uses_train_actor_and_eval_critic(observation_spec, action_spec, make_batch, ref):
    """With BRN, the actor loss runs the actor in train mode (batch stats, its stats move) and the critic in eval mode
    (running stats, untouched), whatever modes the modules were in, and equals the hand computation."""
    momentum = 0.1
    loss, actor, critic = build(observation_spec, action_spec, warmup_steps=3, momentum=momentum, alpha_init=0.5)
    ref.randomize_brn(actor, steps=5)
    ref.randomize_brn(critic, steps=5)
    actor.eval()
    critic.train()
    td = make_batch(6)
    low, high = action_spec.space.low, action_spec.space.high
    eps, _ = draw(4, 6)
    expected = expected_actor_loss(ref, actor, critic, td, eps, alpha=0.5, log_alpha=math.log(0.5), low=low, high=high)
    first = brn_layers(actor)[0]
    old_mean, old_var = first.running_mean.clone(), first.running_var.clone()
    critic_buffers = buffers(critic)

    torch.manual_seed(4)
    loss_actor, metadata = loss.actor_loss(td)
    torch.testing.assert_close(loss_actor, expected["loss_actor"])
    torch.testing.assert_close(metadata["log_prob"], expected["log_prob"])

    assert_stats_moved_toward(first, td["observation"], old_mean, old_var, momentum)
    assert int(first.steps) == 6
    for name, buf in critic.named_buffers():
        assert torch.equal(buf, critic_buffers[name]), name


def grads(module) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in module.named_parameters()}


def test_each_loss_moves_only_its_own_parameters(observation_spec, action_spec, make_batch):
    """Critic loss: critic grads only. Actor loss: actor grads only, critic BRN stats unchanged, actor's moved.
    Alpha loss: log_alpha only."""
    loss, actor, critic = build(observation_spec, action_spec, warmup_steps=2, alpha_init=0.5)
    td = make_batch(8)

    loss_qvalue, _ = loss.qvalue_loss(td)
    loss_qvalue.backward()
    assert all(g is None or not g.any() for g in grads(actor).values())
    assert loss.log_alpha.grad is None
    critic_grads = grads(critic)
    assert all(g is not None for g in critic_grads.values())
    assert all(g.any() for name, g in critic_grads.items() if "weight" in name)

    loss.zero_grad(set_to_none=True)
    critic_buffers, actor_buffers = buffers(critic), buffers(actor)
    loss_actor, metadata = loss.actor_loss(td)
    loss_actor.backward()
    assert all(g is None for g in grads(critic).values())
    assert loss.log_alpha.grad is None
    assert all(g is not None and g.any() for name, g in grads(actor).items() if "weight" in name)
    for name, buf in critic.named_buffers():
        assert torch.equal(buf, critic_buffers[name]), name
    moved = [name for name, buf in actor.named_buffers() if not torch.equal(buf, actor_buffers[name])]
    assert any(name.endswith("running_mean") for name in moved) and any(name.endswith("steps") for name in moved)

    loss.zero_grad(set_to_none=True)
    loss.alpha_loss(metadata["log_prob"]).backward()
    assert loss.log_alpha.grad is not None and loss.log_alpha.grad != 0
    assert all(g is None for g in [*grads(actor).values(), *grads(critic).values()])


def test_terminated_cuts_bootstrap_truncated_keeps_it(observation_spec, action_spec, make_batch, ref):
    """terminated=True gives target r; done=True with terminated=False (truncation) keeps the bootstrap."""
    loss, actor, critic = build(observation_spec, action_spec, batch_norm=False, alpha_init=0.5)
    low, high = action_spec.space.low, action_spec.space.high
    td = make_batch(4)
    ones, zeros = torch.ones(4, 1, dtype=torch.bool), torch.zeros(4, 1, dtype=torch.bool)
    eps_next, _ = draw(2, 4)

    terminated = td.clone()
    terminated["next", "terminated"], terminated["next", "done"] = ones, ones
    torch.manual_seed(2)
    _, metadata = loss.qvalue_loss(terminated)
    with torch.no_grad():
        q = ref.critic(critic_net(critic), td["observation"], td["action"], training=True)
    reward = td["next", "reward"]
    torch.testing.assert_close(metadata["td_error"], (q - reward).abs().max(-1).values)

    truncated = td.clone()
    truncated["next", "terminated"], truncated["next", "done"] = zeros, ones
    torch.manual_seed(2)
    _, metadata = loss.qvalue_loss(truncated)
    expected = expected_qvalue_loss(ref, actor, critic, truncated, eps_next, alpha=0.5, low=low, high=high)
    torch.testing.assert_close(metadata["td_error"], expected["td_error"])
    assert not torch.allclose(expected["y"], reward.squeeze(-1))  # the bootstrap term is really there


@pytest.mark.parametrize("actor_training", [True, False])
@pytest.mark.parametrize("critic_training", [True, False])
def test_modules_keep_their_mode(observation_spec, action_spec, make_batch, actor_training, critic_training):
    """After loss(td), qvalue_loss, actor_loss every submodule of actor and critic is in the mode it had before."""
    loss, actor, critic = build(observation_spec, action_spec)
    actor.train(actor_training)
    critic.train(critic_training)
    net = critic_net(critic)
    net.body[0].train(not critic_training)  # a mixed state must come back too
    before = {m: m.training for m in [*actor.modules(), *critic.modules()]}
    td = make_batch(5)
    for call in (loss, loss.qvalue_loss, loss.actor_loss):
        call(td)
        for module, training in before.items():
            assert module.training == training, (call, module)


def test_fixed_alpha_and_target_entropy(observation_spec, action_spec, make_batch):
    """fixed_alpha keeps alpha constant with log_alpha a buffer; target_entropy 'auto' is -act_dim, a float is kept,
    and the alpha loss is -mean(log_alpha * (log_prob + target_entropy))."""
    loss, _, _ = build(observation_spec, action_spec, fixed_alpha=True, alpha_init=0.3)
    assert "log_alpha" in dict(loss.named_buffers()) and "log_alpha" not in dict(loss.named_parameters())
    td = make_batch(5)
    out = loss(td)
    torch.testing.assert_close(out["alpha"], torch.tensor(0.3))
    assert not out["loss_alpha"].requires_grad
    (out["loss_actor"] + out["loss_qvalue"]).backward()
    torch.testing.assert_close(loss(td)["alpha"], torch.tensor(0.3))

    learnt, _, _ = build(observation_spec, action_spec, alpha_init=0.3)
    assert "log_alpha" in dict(learnt.named_parameters())
    assert learnt.target_entropy.item() == -ACT_DIM
    log_prob = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(learnt.alpha_loss(log_prob), -(math.log(0.3) * (log_prob - ACT_DIM)).mean())
    custom, _, _ = build(observation_spec, action_spec, alpha_init=0.3, target_entropy=-5.0)
    assert custom.target_entropy.item() == -5.0
    torch.testing.assert_close(custom.alpha_loss(log_prob), -(math.log(0.3) * (log_prob - 5.0)).mean())


class CatCritic(nn.Module):
    """Q(s, a) = net(cat(s, a)) over a plain nn.Sequential."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, observation, action):
        return self.net(torch.cat([observation, action], -1))


@pytest.mark.parametrize("brn_class", [BatchRenorm1d, TorchRLBatchRenorm1d])
def test_plain_critic_becomes_independent_members(observation_spec, action_spec, make_batch, brn_class):
    """A single plain critic is copied into num_qvalue_nets members with their own weights and BRN statistics."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[5])
    net = nn.Sequential(
        brn_class(OBS_DIM + ACT_DIM), nn.Linear(OBS_DIM + ACT_DIM, 6), nn.ReLU(), brn_class(6), nn.Linear(6, 1)
    )
    qvalue = ValueOperator(CatCritic(net), in_keys=["observation", "action"])
    loss = CrossQLoss(actor, qvalue, num_qvalue_nets=3)
    assert loss.num_qvalue_nets == 3
    members = [m for m in loss.qvalue_network.modules() if isinstance(m, CatCritic)]
    assert len(members) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(members[i].net[1].weight, members[j].net[1].weight)
            assert members[i].net[3].running_mean.data_ptr() != members[j].net[3].running_mean.data_ptr()

    td = make_batch(8)
    out = loss(td)
    assert all(torch.isfinite(out[key]).all() for key in ("loss_qvalue", "loss_actor", "loss_alpha"))
    means = [m.net[3].running_mean for m in members]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    out["loss_qvalue"].backward()
    assert all(m.net[1].weight.grad is not None and m.net[1].weight.grad.any() for m in members)


def test_list_of_critics_and_mismatched_ensemble(observation_spec, action_spec, make_batch):
    """A list of critics gives one member each; an ensemble critic with another size than num_qvalue_nets raises."""
    actor = make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec, net_arch=[5])
    critics = [
        ValueOperator(
            CatCritic(nn.Sequential(nn.Linear(OBS_DIM + ACT_DIM, 4), nn.ReLU(), nn.Linear(4, 1))),
            in_keys=["observation", "action"],
        )
        for _ in range(3)
    ]
    loss = CrossQLoss(actor, critics)
    assert loss.num_qvalue_nets == 3
    td = make_batch(4)
    loss(td)
    assert td["td_error"].shape == (4,)
    critics[2].module.net[2].bias.data.add_(100.0)  # the loss uses these very modules: member 2 now dominates
    _, metadata = loss.qvalue_loss(td)
    assert (metadata["td_error"] > 50).all()

    ensemble = make_crossq_critic(observation_spec=observation_spec, action_spec=action_spec, net_arch=[4], n_critics=2)
    with pytest.raises(ValueError, match="n_critics"):
        CrossQLoss(actor, ensemble, num_qvalue_nets=3)


# --- drop-in parity with torchrl.objectives.CrossQLoss ------------------------------------------------------------

N_ACT, N_OBS = 4, 3
LOSS_CLASSES = pytest.mark.parametrize(
    "loss_cls", [torchrl.objectives.CrossQLoss, CrossQLoss], ids=["torchrl", "crossq_trl"]
)


class ValueClass(nn.Module):
    """The critic of torchrl's CrossQLoss docstring."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(N_OBS + N_ACT, 1)

    def forward(self, obs, act):
        return self.linear(torch.cat([obs, act], -1))


def docstring_example(loss_cls, **loss_kwargs):
    """Actor, critic, loss and data exactly as in the docstring of torchrl.objectives.CrossQLoss."""
    torch.manual_seed(0)
    spec = Bounded(-torch.ones(N_ACT), torch.ones(N_ACT), (N_ACT,))
    net = nn.Sequential(nn.Linear(N_OBS, 2 * N_ACT), NormalParamExtractor())
    module = SafeModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    actor = ProbabilisticActor(module=module, in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal)
    qvalue = ValueOperator(module=ValueClass(), in_keys=["observation", "action"])
    loss = loss_cls(actor, qvalue, **loss_kwargs)
    batch = [2]
    data = TensorDict(
        {
            "observation": torch.randn(*batch, N_OBS),
            "action": spec.rand(batch),
            ("next", "done"): torch.zeros(*batch, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(*batch, 1, dtype=torch.bool),
            ("next", "reward"): torch.randn(*batch, 1),
            ("next", "observation"): torch.randn(*batch, N_OBS),
        },
        batch,
    )
    return loss, data


def keyword_inputs(data: TensorDict) -> dict[str, torch.Tensor]:
    return {
        "observation": data["observation"],
        "action": data["action"],
        "next_done": data["next", "done"],
        "next_terminated": data["next", "terminated"],
        "next_observation": data["next", "observation"],
        "next_reward": data["next", "reward"],
    }


def test_docstring_example_gives_same_outputs_as_torchrl():
    """loss(td) of the torchrl docstring example has the same keys and shapes with both classes; same in/out keys."""
    shapes, keys = {}, {}
    for loss_cls in (torchrl.objectives.CrossQLoss, CrossQLoss):
        loss, data = docstring_example(loss_cls)
        out = loss(data)
        shapes[loss_cls] = {key: tuple(value.shape) for key, value in out.items()}
        keys[loss_cls] = (set(loss.in_keys), list(loss.out_keys), sorted(map(str, data.keys(True, True))))
    assert shapes[CrossQLoss] == shapes[torchrl.objectives.CrossQLoss]
    assert keys[CrossQLoss] == keys[torchrl.objectives.CrossQLoss]
    assert {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"} <= set(shapes[CrossQLoss])


@LOSS_CLASSES
def test_keyword_call_and_select_out_keys(loss_cls):
    """Keyword-argument call returns the 5 outputs as a tuple; after select_out_keys only the two chosen ones."""
    loss, data = docstring_example(loss_cls)
    outputs = loss(**keyword_inputs(data))
    assert isinstance(outputs, tuple) and len(outputs) == 5
    outputs[0].backward()
    loss.select_out_keys("loss_actor", "loss_qvalue")
    loss_actor, loss_qvalue = loss(**keyword_inputs(data))
    selected = loss(data.clone())
    assert loss_actor.shape == loss_qvalue.shape == ()
    assert set(selected.keys()) == {"loss_actor", "loss_qvalue"}


@LOSS_CLASSES
def test_make_value_estimator_gamma_and_priority_key(loss_cls):
    """make_value_estimator(gamma=0.9) sets the discount of the target; set_keys(priority=...) names the td_error key.

    With Q == c everywhere and alpha ~ 0 the target is r + gamma * c, so the priority is |c - r - gamma * c|.
    """
    loss, data = docstring_example(loss_cls, alpha_init=1e-7)
    loss.make_value_estimator(gamma=0.9)
    loss.set_keys(priority="my_priority")
    c = 10.0
    with torch.no_grad():
        for name, p in loss.named_parameters():
            if "qvalue" in name:
                p.fill_(c if name.endswith("bias") else 0.0)
    loss(data)
    reward = data["next", "reward"].squeeze(-1)
    assert "td_error" not in data
    torch.testing.assert_close(data["my_priority"], (c - reward - 0.9 * c).abs(), rtol=0, atol=1e-4)


def test_methods_have_torchrl_signatures_and_metadata():
    """qvalue_loss / actor_loss / alpha_loss take the same arguments and return the same metadata as torchrl's."""
    results = {}
    for loss_cls in (torchrl.objectives.CrossQLoss, CrossQLoss):
        loss, data = docstring_example(loss_cls)
        signatures = {
            name: list(inspect.signature(getattr(loss_cls, name)).parameters)
            for name in ("qvalue_loss", "actor_loss", "alpha_loss", "make_value_estimator", "__init__")
        }
        loss_qvalue, value_metadata = loss.qvalue_loss(data)
        loss_actor, actor_metadata = loss.actor_loss(data)
        loss_alpha = loss.alpha_loss(actor_metadata["log_prob"], tensordict=data)
        shapes = {
            "qvalue": (tuple(loss_qvalue.shape), {k: tuple(v.shape) for k, v in value_metadata.items()}),
            "actor": (tuple(loss_actor.shape), {k: tuple(v.shape) for k, v in actor_metadata.items()}),
            "alpha": tuple(loss_alpha.shape),
        }
        results[loss_cls] = (signatures, shapes)
    ours, theirs = results[CrossQLoss], results[torchrl.objectives.CrossQLoss]
    extra_init = ["reward_normalizer"]  # keyword-only options of this CrossQLoss, after torchrl's parameters
    assert ours[0].pop("__init__") == theirs[0].pop("__init__") + extra_init
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert set(results[CrossQLoss][1]["qvalue"][1]) == {"td_error"}
    assert set(results[CrossQLoss][1]["actor"][1]) == {"log_prob"}


# Public attributes of torchrl's CrossQLoss (0.14.1) that crossq_trl.CrossQLoss does not have. Reported, not hidden:
# the test fails if anything else goes missing, and keeps passing if some of these are added.
KNOWN_MISSING_ATTRIBUTES: set[str] = set()


def test_torchrl_public_attributes_present():
    """Every public attribute of torchrl's CrossQLoss exists on ours, apart from the documented known gaps."""
    theirs, _ = docstring_example(torchrl.objectives.CrossQLoss)
    ours, _ = docstring_example(CrossQLoss)
    public = {name for name in dir(theirs) if not name.startswith("_")}
    missing = {name for name in public if not hasattr(ours, name)}
    assert missing <= KNOWN_MISSING_ATTRIBUTES, sorted(missing - KNOWN_MISSING_ATTRIBUTES)
    assert hasattr(theirs, "actor_network_params") and hasattr(theirs, "qvalue_network_params")
    for name in ("actor_network", "qvalue_network", "num_qvalue_nets", "log_alpha", "target_entropy", "tensor_keys"):
        assert hasattr(ours, name), name


# --- torch.compile ----------------------------------------------------------------------------------------------


def test_compiled_losses_match_eager(observation_spec, action_spec, make_batch):
    """torch.compile(fullgraph=True) of qvalue_loss and of actor_loss + alpha_loss gives the eager losses, gradients
    and BRN buffers (same seeds), over steps crossing the BRN warm-up.

    Backend "aot_eager_decomp_partition": Dynamo full-graph capture, AOT autograd and Inductor's min-cut partitioner
    (where recomputing reads of the updated BRN buffers went wrong) with eager kernels, so the check stays fast and
    samples with eager's RNG. Inductor code generation is covered by the BatchRenorm1d compile test.
    """
    eager, _, _ = build(observation_spec, action_spec, warmup_steps=1, momentum=0.1, alpha_init=0.5)
    compiled_module = copy.deepcopy(eager)

    def critic_step(loss, td):
        return loss.qvalue_loss(td)

    def actor_step(loss, td):
        loss_actor, metadata = loss.actor_loss(td)
        return loss_actor, loss.alpha_loss(metadata["log_prob"])

    backend = "aot_eager_decomp_partition"
    compiled_critic_step = torch.compile(critic_step, fullgraph=True, backend=backend)
    compiled_actor_step = torch.compile(actor_step, fullgraph=True, backend=backend)
    for step in range(3):
        td = make_batch(8)
        for eager_fn, compiled_fn in ((critic_step, compiled_critic_step), (actor_step, compiled_actor_step)):
            results = []
            for module, fn in ((eager, eager_fn), (compiled_module, compiled_fn)):
                module.zero_grad(set_to_none=True)
                torch.manual_seed(100 + step)
                first, second = fn(module, td.clone())
                total = first + second if torch.is_tensor(second) else first
                total.backward()
                extra = second if torch.is_tensor(second) else second["td_error"]
                grads = [p.grad for p in module.parameters()]
                results.append([first.detach(), extra.detach(), *grads])
            for got, want in zip(results[1], results[0], strict=True):
                if want is None:
                    assert got is None
                else:
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        for (name, want), got in zip(eager.named_buffers(), compiled_module.buffers(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)

"""CrossQ + WN and XQC as options of the same components: weight-norm projection, categorical critic and loss,
reward normalization, the presets, and compiled = eager for the variant options."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from tensordict import TensorDict
from torch._dynamo.utils import counters
from torchrl.envs.utils import ExplorationType, set_exploration_type

from crossq_trl import (
    BatchRenorm1d,
    BatchRenormConfig,
    CrossQ,
    CrossQConfig,
    CrossQLoss,
    CrossQUpdate,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
)
from crossq_trl.modules import EnsembleLinear
from crossq_trl.modules.categorical import CategoricalSupport
from crossq_trl.modules.weight_norm import UNIT_NORM, project_weights_
from crossq_trl.objectives import ReturnNormalizer, categorical_td_target

BATCH = 32
OPTIONS = {"weight_norm": True, "weight_norm_head": True, "pre_activation_norm": True}


def build_loss(
    observation_spec, action_spec, *, categorical=None, normalizer=None, net_arch=(16, 16), **options
) -> CrossQLoss:
    specs = {"observation_spec": observation_spec, "action_spec": action_spec}
    network = {"net_arch": net_arch, "batch_renorm": BatchRenormConfig(warmup_steps=1, momentum=0.1), **options}
    actor = make_crossq_actor(**specs, **network)
    critic = make_crossq_critic(**specs, **network, categorical=categorical)
    loss = CrossQLoss(
        actor,
        critic,
        alpha_init=0.5,
        loss_function="l2" if categorical is None else "categorical",
        reward_normalizer=normalizer,
    )
    loss.make_value_estimator(gamma=0.99)
    return loss


def unit_norm_layers(module):
    return [layer for layer in module.modules() if getattr(layer, UNIT_NORM, None) is not None]


def output_unit_norms(layer) -> torch.Tensor:
    squared = layer.weight.square().sum(-1)
    if getattr(layer, UNIT_NORM) == "weight_and_bias":
        squared = squared + layer.bias.square()
    return squared.sqrt()


@pytest.mark.parametrize("pre_activation_norm", [False, True], ids=["crossq_wn_blocks", "xqc_blocks"])
def test_weight_norm_keeps_unit_norm_after_updates(observation_spec, action_spec, make_batch, pre_activation_norm):
    """Each output unit of a marked layer ((weights, bias) of the hidden layers, weights only of the heads) has norm
    1 at construction and after critic and actor updates with a large learning rate and weight decay (AdamW); the
    weights did move, and unmarked layers are left free (their norms drift away from 1)."""
    options = {"weight_norm": True, "pre_activation_norm": pre_activation_norm, "weight_norm_head": pre_activation_norm}
    loss = build_loss(observation_spec, action_spec, **options)
    layers = unit_norm_layers(loss)
    heads = 3 if pre_activation_norm else 0  # critic head; actor mean and log_std heads
    assert len(layers) == 2 * 2 + heads  # two hidden layers in each network
    for layer in layers:
        torch.testing.assert_close(output_unit_norms(layer), torch.ones_like(output_unit_norms(layer)))
    if pre_activation_norm:  # XQC's blocks: Linear without bias -> BN -> ReLU
        body = loss.qvalue_network.module.body
        assert body[1].bias is None and isinstance(body[2], BatchRenorm1d) and isinstance(body[3], torch.nn.ReLU)
    before = {id(layer): layer.weight.detach().clone() for layer in layers}
    optimizers = make_crossq_optimizers(
        loss, learning_rate=0.05, optimizer_class=torch.optim.AdamW, optimizer_kwargs={"weight_decay": 0.1}
    )
    update = CrossQUpdate(loss, optimizers, policy_delay=1, compile=False)
    for _ in range(3):
        update(make_batch(BATCH))
    for layer in layers:
        norms = output_unit_norms(layer)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert not torch.allclose(layer.weight, before[id(layer)])
    free = loss.actor_network.module[0].module.mean
    if not pre_activation_norm:
        assert not torch.allclose(free.weight.norm(dim=-1), torch.ones(free.weight.shape[0]), atol=1e-3)


def test_weight_norm_with_an_eagerly_stepped_optimizer(observation_spec, action_spec, make_batch):
    """An optimizer that steps outside the graph (SGD) gets the projection after its step too."""
    loss = build_loss(observation_spec, action_spec, **OPTIONS)
    optimizers = make_crossq_optimizers(loss, learning_rate=0.5, optimizer_class=torch.optim.SGD)
    CrossQUpdate(loss, optimizers, policy_delay=1, compile=False)(make_batch(BATCH))
    for layer in unit_norm_layers(loss):
        torch.testing.assert_close(output_unit_norms(layer), torch.ones_like(output_unit_norms(layer)))


def test_project_weights_for_a_plain_loop(observation_spec, action_spec):
    """In a hand-written loop, project_weights_ after optimizer.step() puts the marked layers back on the sphere."""
    specs = {"observation_spec": observation_spec, "action_spec": action_spec}
    critic = make_crossq_critic(**specs, net_arch=[8], weight_norm=True)
    (layer,) = unit_norm_layers(critic)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    project_weights_(critic)
    torch.testing.assert_close(output_unit_norms(layer), torch.ones(2, 8))  # [n_critics, out]


def test_categorical_projection_by_hand():
    """Atoms [-1, 0, 1]; masses 0.2, 0.5, 0.3 moved to -0.5, 0.25 and 2.0 (clipped to 1): 0.2 splits 0.1 / 0.1 on
    -1 and 0, 0.5 splits 0.375 / 0.125 on 0 and 1, 0.3 lands on 1."""
    atoms = torch.tensor([-1.0, 0.0, 1.0])
    target = categorical_td_target(torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-0.5, 0.25, 2.0]), atoms)
    torch.testing.assert_close(target, torch.tensor([0.1, 0.475, 0.425]))


def xqc_projection(probs: list[float], target_atoms: list[float], v_min: float, v_max: float, n: int) -> list[float]:
    """XQC's categorical_td_loss projection, with floor/ceil indices as their code writes it, in plain Python."""
    import math

    out = [0.0] * n
    for p, z in zip(probs, target_atoms, strict=True):
        b = (min(max(z, v_min), v_max) - v_min) / ((v_max - v_min) / (n - 1))
        lower, upper = math.floor(b), math.ceil(b)
        out[lower] += p * (upper + (lower == upper) - b)
        out[upper] += p * (b - lower)
    return out


def test_categorical_loss_equals_a_hand_computation(observation_spec, action_spec, make_batch):
    """The cross-entropy critic loss on a tiny case: 5 atoms on [-2, 2], a deterministic next action (log-std
    -20, alpha 1e-9 fixed so the entropy term vanishes), one terminated sample. By hand: the joint pass gives each
    critic's log-probabilities; per sample, the distribution of the critic with the lower Q(s', a') is moved to
    r + gamma (1 - terminated) z, projected as XQC does, and the loss is -sum target * log p_pred, summed over
    critics and averaged over the batch; td_error uses the expected values."""
    support = CategoricalSupport(-2.0, 2.0, 5)
    specs = {"observation_spec": observation_spec, "action_spec": action_spec}
    actor = make_crossq_actor(**specs, net_arch=[8])
    with torch.no_grad():
        actor.module[0].module.log_std.bias.fill_(-20.0)
        actor.module[0].module.log_std.weight.zero_()
    critic = make_crossq_critic(**specs, net_arch=[8], categorical=support)
    loss = CrossQLoss(actor, critic, loss_function="categorical", alpha_init=1e-9, fixed_alpha=True)
    loss.make_value_estimator(gamma=0.9)
    terminated = torch.tensor([[False], [True], [False], [False]])
    td = make_batch(4, terminated=terminated)
    td["next", "reward"] = torch.tensor([[0.3], [-0.7], [2.5], [-1.2]])

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        next_action = actor(td["next"].select("observation").clone())["action"]
        joint = TensorDict(
            {
                "observation": torch.cat([td["observation"], td["next", "observation"]]),
                "action": torch.cat([td["action"], next_action]),
            },
            [8],
        )
        out = copy.deepcopy(critic).train()(joint)
    q, log_probs = out["state_action_value"], out["state_action_value_log_probs"]
    atoms = [-2.0, -1.0, 0.0, 1.0, 2.0]
    expected_loss, td_error = 0.0, []
    for i in range(4):
        lowest = int(q[4 + i].argmin())
        probs = log_probs[4 + i, lowest].exp().tolist()
        reward, not_done = float(td["next", "reward"][i]), 1.0 - float(terminated[i])
        target = xqc_projection(probs, [reward + 0.9 * not_done * z for z in atoms], -2.0, 2.0, 5)
        expected_loss += -sum(t * float(log_probs[i, e, j]) for e in range(2) for j, t in enumerate(target)) / 4
        y = reward + 0.9 * not_done * float(q[4 + i].min())
        td_error.append(max(abs(float(q[i, e]) - y) for e in range(2)))

    loss_value, metadata = loss.qvalue_loss(td)
    torch.testing.assert_close(loss_value, torch.tensor(expected_loss), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metadata["td_error"], torch.tensor(td_error), rtol=1e-4, atol=1e-5)


def test_categorical_needs_its_critic(observation_spec, action_spec):
    specs = {"observation_spec": observation_spec, "action_spec": action_spec}
    actor, critic = make_crossq_actor(**specs, net_arch=[8]), make_crossq_critic(**specs, net_arch=[8])
    with pytest.raises(ValueError, match="categorical=CategoricalSupport"):
        CrossQLoss(actor, critic, loss_function="categorical")


def test_return_normalizer_follows_the_discounted_return():
    """Two envs, three steps, gamma 0.5, env 0 done at step 1: G goes (1, 2), (1.5, 2) [done: 0 * G + r], (1.75, 3)
    -> the population variance of the six values, and rewards are divided by its square root."""
    normalizer = ReturnNormalizer(0.5, n_envs=2)
    batch = TensorDict(
        {
            ("next", "reward"): torch.tensor([[[1.0], [1.0], [1.0]], [[2.0], [1.0], [2.0]]]),
            ("next", "done"): torch.tensor([[[False], [False], [False]], [[False], [True], [False]]]),
        },
        [2, 3],
    )
    normalizer.observe(batch)
    returns = torch.tensor([1.0, 2.0, 1.5, 1.0, 1.75, 2.5], dtype=torch.float64)
    torch.testing.assert_close(normalizer.var, returns.var(unbiased=False))
    torch.testing.assert_close(normalizer.mean, returns.mean())
    std = returns.std(unbiased=False).float()
    torch.testing.assert_close(normalizer(torch.tensor([2.0])), torch.tensor([2.0]) / std)


def test_presets_build_what_their_sources_say():
    """xqc: conf/agent/xqc.yaml (+ base_agent.yaml, config.yaml); crossq_wn: conf/agent/crossq_wn.yaml."""
    xqc = CrossQ("MlpPolicy", "Pendulum-v1", variant="xqc", compile=False)
    critic, actor = xqc.critic.module, xqc.actor.module[0].module
    critic_linears = [m for m in critic.body if isinstance(m, EnsembleLinear)]
    assert [m.out_features for m in critic_linears] == [512] * 4 and all(m.bias is None for m in critic_linears)
    assert [m.out_features for m in actor.body if isinstance(m, torch.nn.Linear)] == [256] * 4
    assert isinstance(critic.body[2], BatchRenorm1d) and isinstance(critic.body[3], torch.nn.ReLU)  # pre-activation
    assert critic.head.out_features == 101 and critic.categorical == CategoricalSupport(-5.0, 5.0, 101)
    assert len(unit_norm_layers(critic)) == 5 and len(unit_norm_layers(actor)) == 6  # hidden layers and heads
    assert all(m.r_max == 1.0 and m.d_max == 0.0 for m in critic.modules() if isinstance(m, BatchRenorm1d))
    loss = xqc.loss_module
    assert loss.loss_function == "categorical" and loss.reward_normalizer.gamma == 0.995
    assert float(loss.target_entropy) == -0.5 and float(loss._alpha) == pytest.approx(0.01)
    critic_opt = xqc.update.optimizers.critic
    assert type(critic_opt) is torch.optim.Adam and critic_opt.param_groups[0]["betas"] == (0.9, 0.999)
    cfg = xqc.config
    assert (cfg.learning_starts, cfg.gradient_steps, cfg.policy_delay, cfg.batch_size) == (5000, 2, 3, 256)
    assert cfg.learning_rate_at(1.0) == pytest.approx(3e-4) and cfg.learning_rate_at(0.0) == pytest.approx(3e-5)

    wn = CrossQ("MlpPolicy", "Pendulum-v1", variant="crossq_wn", compile=False, gamma=0.98)
    critic, actor = wn.critic.module, wn.actor.module[0].module
    assert [m.out_features for m in critic.body if isinstance(m, EnsembleLinear)] == [512, 512]
    assert isinstance(critic.body[2], torch.nn.ReLU) and critic.head.out_features == 1  # post-activation, MSE
    assert len(unit_norm_layers(critic)) == 2 and len(unit_norm_layers(actor)) == 2  # hidden layers only
    assert all(getattr(m, UNIT_NORM) == "weight_and_bias" for m in unit_norm_layers(critic))
    critic_opt = wn.update.optimizers.critic
    assert type(critic_opt) is torch.optim.AdamW and critic_opt.param_groups[0]["weight_decay"] == 0.01
    assert wn.loss_module.loss_function == "l2" and wn.loss_module.reward_normalizer is None
    assert wn.config.gamma == 0.98  # an argument set away from its default wins over the preset


def test_an_argument_passed_with_its_default_value_wins_over_the_preset(tmp_path):
    """CrossQ(variant="xqc", gradient_steps=1) updates once per env step (the preset says 2), through the facade, the
    CLI and a saved model; only the arguments left out take the preset's values."""
    model = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        variant="xqc",
        compile=False,
        gradient_steps=1,
        learning_starts=100,
        policy_kwargs={"weight_norm_head": False},
        critic_loss="mse",
    )
    cfg = model.config
    assert (cfg.gradient_steps, cfg.learning_starts, cfg.weight_norm_head, cfg.critic_loss) == (1, 100, False, "mse")
    assert (cfg.gamma, cfg.weight_norm, cfg.learning_rate) == (0.995, True, "lin_3e-4_3e-5")  # left out: preset
    assert CrossQ.load(model.save(tmp_path / "xqc.pt")).config == cfg
    assert CrossQConfig(variant="xqc", gradient_steps=1).gradient_steps == 2  # no caller to tell: at default
    assert CrossQConfig(variant="xqc", gradient_steps=1, explicit_fields=["gradient_steps"]).gradient_steps == 1
    with pytest.raises(ValueError, match=r"explicit_fields \['gradient_step'\] are not fields"):
        CrossQConfig(explicit_fields=["gradient_step"])


def test_plain_crossq_is_unchanged_by_the_variant_options():
    """variant='crossq' is the default configuration, field by field, and builds the same networks and numbers."""
    default, explicit = CrossQConfig(), CrossQConfig(variant="crossq")
    assert default.to_dict() == explicit.to_dict()
    assert (default.weight_norm, default.critic_loss, default.reward_normalization, default.batch_renorm) == (
        False,
        "mse",
        False,
        True,
    )
    models = [CrossQ("MlpPolicy", "Pendulum-v1", seed=0, compile=False, **kw) for kw in ({}, {"variant": "crossq"})]
    states = [m.loss_module.state_dict() for m in models]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not unit_norm_layers(models[0].loss_module)


def test_compiled_variant_update_matches_eager_in_two_graphs(observation_spec, action_spec, make_batch):
    """XQC's options together (pre-activation blocks, weight norm of hidden layers and heads, categorical critic,
    reward normalization) under AdamW with weight decay: the compiled update gives the eager numbers, in two graphs
    without breaks (the projection inside them) and no recompilation."""
    normalizer = ReturnNormalizer(0.99)
    normalizer.observe(make_batch(20))
    support = CategoricalSupport(-5.0, 5.0, 11)
    eager_loss = build_loss(
        observation_spec, action_spec, categorical=support, normalizer=normalizer, net_arch=[16], **OPTIONS
    )
    compiled_loss = copy.deepcopy(eager_loss)
    updates = {}
    for name, loss in (("eager", eager_loss), ("compiled", compiled_loss)):
        adamw = {"optimizer_class": torch.optim.AdamW, "optimizer_kwargs": {"weight_decay": 0.1}}
        optimizers = make_crossq_optimizers(loss, **adamw)
        updates[name] = CrossQUpdate(loss, optimizers, policy_delay=2, compile=name == "compiled")
    counters.clear()
    for step in range(4):
        batch = make_batch(BATCH)
        for name in ("eager", "compiled"):
            torch.manual_seed(step)
            updates[name](batch.clone())
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"], dict(counters["graph_break"])
    compiled_state = compiled_loss.state_dict()
    mismatched = {}
    for name, want in eager_loss.state_dict().items():
        # The input BRN's bias feeds a bias-free Linear and then batch norm, which removes any shift in train mode:
        # its gradient is zero up to rounding, and Adam turns rounding noise into full steps of either sign. Not
        # comparable, nor is the next BN's running mean, which tracks W @ bias; through the eval-mode passes (a'
        # for the target) that noise reaches everything else at ~5e-4 relative after 4 updates, hence the
        # tolerance (a wrong formula or a missing projection is O(1)).
        if name.endswith(("body.0.bias", "body.2.running_mean")):
            continue
        error = (compiled_state[name].double() - want.double()).norm()
        if error > 3e-3 * want.double().norm() + 1e-6:
            mismatched[name] = float(error / want.double().norm().clamp_min(1e-12))
    assert not mismatched, mismatched
    with torch._dynamo.config.patch(error_on_recompile=True):
        normalizer.observe(make_batch(5))  # new statistics: buffer values, no new graph
        compiled_loss.reward_normalizer.observe(make_batch(5))
        for _ in range(2):
            updates["compiled"](make_batch(BATCH))
    for layer in unit_norm_layers(compiled_loss):
        torch.testing.assert_close(output_unit_norms(layer), torch.ones_like(output_unit_norms(layer)))


def test_cli_flag_selects_the_variant():
    """crossq-trl train --variant xqc: the flags not given take the preset's values, the flags given win, even at
    their default value."""
    from crossq_trl.cli import build_parser, config_kwargs

    args = build_parser().parse_args(["train", "Pendulum-v1", "--variant", "xqc", "--gradient-steps", "1"])
    model = CrossQ("MlpPolicy", "Pendulum-v1", compile=False, _init_setup_model=False, **config_kwargs(args))
    config = model.config
    assert (config.critic_loss, config.weight_norm_head, config.gradient_steps) == ("categorical", True, 1)
    assert config.categorical_support == (-5.0, 5.0, 101) and config.learning_rate == "lin_3e-4_3e-5"

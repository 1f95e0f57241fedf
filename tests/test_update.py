"""CrossQUpdate: the compiled step gives the eager numbers, traces into one graph per objective without breaks and
never recompiles after warm-up; the policy delay and learning-rate changes behave."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from crossq_trl import (
    BatchRenormConfig,
    CrossQLoss,
    CrossQUpdate,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
)

POLICY_DELAY = 3
BATCH = 64
# Tiny nets; BRN warm-up of one step, so the renorm correction (r, d) is active from the second update on.
NETWORK = {"net_arch": [16, 16], "batch_renorm": BatchRenormConfig(warmup_steps=1, momentum=0.1)}


def make_loss(observation_spec, action_spec, **actor_kwargs) -> CrossQLoss:
    specs = {"observation_spec": observation_spec, "action_spec": action_spec}
    actor = make_crossq_actor(**specs, **NETWORK, **actor_kwargs)
    critic = make_crossq_critic(**specs, **NETWORK)
    loss = CrossQLoss(actor, critic, alpha_init=0.5)
    loss.make_value_estimator(gamma=0.99)
    return loss


def make_update(loss: CrossQLoss, *, compile: bool) -> CrossQUpdate:
    return CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=POLICY_DELAY, compile=compile)


@pytest.fixture
def loss(observation_spec, action_spec) -> CrossQLoss:
    return make_loss(observation_spec, action_spec)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BRN running statistics and step counters included), cloned."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def assert_relative_close(got: torch.Tensor, want: torch.Tensor, name: str, rtol: float = 1e-5) -> None:
    """``|got - want| <= rtol |want|`` over the whole tensor (float32 rounding, amplified by Adam on weights whose
    gradient is ~0, moves single entries more than that); integer buffers (BRN step counters) exactly equal."""
    if not want.is_floating_point():
        assert torch.equal(got, want), name
        return
    error, scale = (got - want).double().norm().item(), want.double().norm().item()
    assert error <= rtol * scale + 1e-12, f"{name}: relative error {error / max(scale, 1e-30):.2e} > {rtol:.0e}"


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {name for name, value in before.items() if not torch.equal(value, after[name])}


def assert_same_metrics_side_by_side(eager: CrossQUpdate, compiled: CrossQUpdate, make_batch) -> None:
    """Two policy-delay cycles and one critic step on the same batches and seeds: the same metrics each step."""
    for step in range(2 * POLICY_DELAY + 1):
        batch = make_batch(BATCH)
        metrics = []
        for update in (eager, compiled):
            torch.manual_seed(100 + step)
            metrics.append(update(batch.clone()))
        assert set(metrics[1].keys()) == set(metrics[0].keys())
        for key, want in metrics[0].items():
            torch.testing.assert_close(metrics[1][key], want, rtol=1e-5, atol=1e-6, msg=f"{key}, step {step}")


def test_compiled_update_matches_eager(loss, make_batch):
    """Same initial weights, batches and seeds: after several critic and actor updates (BRN warm-up crossed), the
    compiled and the eager update hold the same parameters, BRN buffers, optimizer moments and metrics."""
    eager_loss, compiled_loss = loss, copy.deepcopy(loss)
    eager = make_update(eager_loss, compile=False)
    compiled = make_update(compiled_loss, compile=True)
    assert_same_metrics_side_by_side(eager, compiled, make_batch)
    assert eager.num_actor_updates == compiled.num_actor_updates == 2
    compiled_state = compiled_loss.state_dict()
    assert compiled_state.keys() == eager_loss.state_dict().keys()
    for name, want in eager_loss.state_dict().items():
        assert_relative_close(compiled_state[name], want, name)
    for name, optimizer in eager.optimizers.all().items():
        compiled_optimizer = compiled.optimizers.all()[name]
        for group, compiled_group in zip(optimizer.param_groups, compiled_optimizer.param_groups, strict=True):
            for param, compiled_param in zip(group["params"], compiled_group["params"], strict=True):
                for key in ("exp_avg", "exp_avg_sq"):
                    got, want = compiled_optimizer.state[compiled_param][key], optimizer.state[param][key]
                    assert_relative_close(got, want, f"{name} optimizer {key}")


def test_compiled_update_is_two_graphs_that_never_recompile(loss, make_batch):
    """One graph per kind of update (critic only; critic, actor and temperature), no graph break, and 20 more
    updates (both kinds) compile nothing new; nor does a NaN reward, which the graphs flag with the number of the
    first update whose losses, gradient norm and parameters it made non-finite."""
    update = make_update(loss, compile=True)
    counters.clear()
    for _ in range(POLICY_DELAY):  # warm-up: both kinds of update have run
        update(make_batch(BATCH))
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"], dict(counters["graph_break"])
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(20):
            update(make_batch(BATCH))
        assert update.first_nonfinite() == {}
        poisoned = make_batch(BATCH)
        poisoned["next", "reward"][0] = float("nan")
        for batch in (poisoned, make_batch(BATCH)):
            update(batch)
    assert counters["stats"]["unique_graphs"] == 2
    assert update.num_updates == POLICY_DELAY + 22
    assert update.num_actor_updates == update.num_updates // POLICY_DELAY
    nan_update = POLICY_DELAY + 21  # a critic step, then an actor step on the NaN critic
    assert update.first_nonfinite() == {
        "critic loss": nan_update,
        "gradient norm": nan_update,
        "parameters": nan_update,
        "actor loss": nan_update,  # the temperature loss reads log pi of the actor before its step: still finite
    }


def test_gsde_update_compiles_to_two_graphs_matching_eager(observation_spec, action_spec, make_batch):
    """With a gSDE actor, each pass draws its noise matrix inside the graph: the compiled update gives the eager
    numbers (weights, log_std, BRN statistics), in two graphs without breaks, and never recompiles."""
    eager_loss = make_loss(observation_spec, action_spec, use_sde=True, log_std_init=-1.0)
    compiled_loss = copy.deepcopy(eager_loss)
    eager, compiled = make_update(eager_loss, compile=False), make_update(compiled_loss, compile=True)
    counters.clear()
    assert_same_metrics_side_by_side(eager, compiled, make_batch)
    for name, want in eager_loss.state_dict().items():
        if not name.endswith("_extra_state"):
            assert_relative_close(compiled_loss.state_dict()[name], want, name)
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"], dict(counters["graph_break"])
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2 * POLICY_DELAY):
            compiled(make_batch(BATCH))
    log_std = compiled_loss.actor_network.module[0].module.log_std
    assert not torch.equal(log_std, torch.full_like(log_std, -1.0))  # trained through the noise


def test_each_update_compiles_graphs_of_its_own(observation_spec, action_spec, make_batch):
    """The compiled step checks only its input tensors, so a graph must never serve another CrossQUpdate: two
    updates on same-shaped losses that differ in configuration only (the critic loss function) each give the
    numbers of their own eager counterpart."""
    results = {}
    for loss_function in ("l2", "smooth_l1"):
        torch.manual_seed(0)
        loss = make_loss(observation_spec, action_spec)
        loss.loss_function = loss_function
        for compile in (False, True):
            torch.manual_seed(1)
            update = make_update(copy.deepcopy(loss), compile=compile)
            torch.manual_seed(2)
            results[loss_function, compile] = torch.stack(
                [update(make_batch(BATCH))["loss_qvalue"] for _ in range(POLICY_DELAY)]
            )
    for loss_function in ("l2", "smooth_l1"):
        torch.testing.assert_close(results[loss_function, True], results[loss_function, False], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(results["l2", True], results["smooth_l1", True])


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_policy_delay(loss, make_batch, compile):
    """The critic (weights and BRN statistics) moves on every update; the actor (weights and BRN statistics) and
    the temperature only on every POLICY_DELAY-th, which is also when the actor metrics are returned."""
    update = make_update(loss, compile=compile)
    actor_keys = {"loss_actor", "loss_alpha", "alpha", "entropy"}
    for step in range(1, 3 * POLICY_DELAY + 2):
        actor, critic, log_alpha = snapshot(loss.actor_network), snapshot(loss.qvalue_network), loss.log_alpha.clone()
        metrics = update(make_batch(BATCH))
        actor_step = step % POLICY_DELAY == 0
        assert update.num_updates == step
        assert update.num_actor_updates == step // POLICY_DELAY
        assert changed(critic, loss.qvalue_network) == set(critic)  # every critic weight and BRN buffer
        if actor_step:
            assert changed(actor, loss.actor_network) == set(actor)
            assert not torch.equal(loss.log_alpha, log_alpha)
            assert actor_keys <= set(metrics.keys())
        else:
            assert not changed(actor, loss.actor_network)
            assert torch.equal(loss.log_alpha, log_alpha)
            assert not actor_keys & set(metrics.keys())
        assert {"loss_qvalue", "td_error"} <= set(metrics.keys())


def test_set_learning_rate_takes_effect_without_recompiling(loss, make_batch):
    """optimizers.set_learning_rate reaches every optimizer: at lr 0 no weight moves (the BRN statistics still do),
    back at 1e-3 they all move again, and the compiled step is reused throughout."""
    update = make_update(loss, compile=True)
    for _ in range(POLICY_DELAY):
        update(make_batch(BATCH))
    parameters = dict(loss.named_parameters())
    with torch._dynamo.config.patch(error_on_recompile=True):
        update.optimizers.set_learning_rate(0.0)
        for optimizer in update.optimizers.all().values():
            assert all(group["lr"] == 0.0 for group in optimizer.param_groups)
        before = snapshot(loss)
        for _ in range(POLICY_DELAY):
            update(make_batch(BATCH))
        moved = changed(before, loss)
        assert not moved & set(parameters)
        assert {"qvalue_network.module.body.0.running_mean", "actor_network.module.0.module.body.0.running_mean"} <= (
            moved
        )

        update.optimizers.set_learning_rate(1e-3)
        before = snapshot(loss)
        for _ in range(POLICY_DELAY):
            update(make_batch(BATCH))
        assert set(parameters) <= changed(before, loss)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_bf16_update_is_float32_within_bfloat16_rounding(loss, make_batch, compile):
    """precision='bf16': the products run in bfloat16 (the numbers differ from float32) while BRN statistics,
    losses and weights stay float32 and within bfloat16 rounding of the float32 update's (eager: the compiled
    float32 update matches it, test_compiled_update_matches_eager)."""
    results = {}
    for precision in ("float32", "bf16"):
        torch.manual_seed(0)
        copy_of_loss = copy.deepcopy(loss)
        update = CrossQUpdate(
            copy_of_loss,
            make_crossq_optimizers(copy_of_loss),
            policy_delay=POLICY_DELAY,
            compile=compile and precision == "bf16",
            precision=precision,
        )
        torch.manual_seed(1)
        metrics = [update(make_batch(BATCH)) for _ in range(POLICY_DELAY)]
        results[precision] = (torch.stack([m["loss_qvalue"] for m in metrics]), copy_of_loss.state_dict())
    (want_losses, want_state), (got_losses, got_state) = results["float32"], results["bf16"]
    assert not torch.equal(got_losses, want_losses)
    torch.testing.assert_close(got_losses, want_losses, rtol=3e-2, atol=3e-2)
    for name, value in got_state.items():
        assert value.dtype == want_state[name].dtype, name
        if value.is_floating_point():
            torch.testing.assert_close(value, want_state[name], rtol=5e-2, atol=5e-3, msg=name)


def test_precision_is_checked(loss):
    """An unknown precision and TF32 on a CPU raise ValueError saying what to use instead."""
    optimizers = make_crossq_optimizers(loss)
    with pytest.raises(ValueError, match="precision must be one of"):
        CrossQUpdate(loss, optimizers, precision="fp16")
    with pytest.raises(ValueError, match="CUDA matmul mode"):
        CrossQUpdate(loss, optimizers, precision="tf32")

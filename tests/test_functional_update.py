"""The pieces of the compiled update: Adam as a tensor function, flat storage of many tensors, and the update's
handling of replaced state and of optimizers other than Adam."""

from __future__ import annotations

import copy

import pytest
import torch
from test_update import BATCH, POLICY_DELAY, assert_relative_close, make_loss

from crossq_trl import CrossQUpdate, make_crossq_optimizers
from crossq_trl.training.flat_tensors import FlatTensors
from crossq_trl.training.functional_adam import adam_coefficients, adam_step_, init_adam_state


@pytest.mark.parametrize(
    ("optimizer_class", "kwargs"),
    [
        (torch.optim.Adam, {"betas": (0.5, 0.999)}),
        (torch.optim.Adam, {"weight_decay": 0.1}),
        (torch.optim.AdamW, {"betas": (0.5, 0.999), "weight_decay": 0.1, "eps": 1e-6}),
    ],
)
def test_functional_adam_matches_torch_optim(optimizer_class, kwargs):
    """Five steps of adam_step_ with the scalars of adam_coefficients give torch.optim's parameters, moments and
    step count, learning-rate change included."""
    param = torch.randn(7, 3)
    reference = param.clone().requires_grad_(True)
    optimizer = optimizer_class([reference], lr=1e-2, **kwargs)
    shadow = optimizer_class([torch.nn.Parameter(param.clone())], lr=1e-2, **kwargs)
    init_adam_state(shadow)
    (ours,) = shadow.param_groups[0]["params"]
    state = shadow.state[ours]
    for step in range(1, 6):
        if step == 4:
            for opt in (optimizer, shadow):
                opt.param_groups[0]["lr"] = 3e-3
        grad = torch.randn(7, 3)
        reference.grad = grad.clone()
        optimizer.step()
        coefficients = adam_coefficients(shadow, shadow.param_groups[0], step)
        with torch.no_grad():
            adam_step_(ours, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], coefficients)
        torch.testing.assert_close(ours, reference.detach(), rtol=1e-6, atol=1e-7)
    want = optimizer.state[reference]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(state[key], want[key], rtol=1e-6, atol=1e-9)


def test_flat_tensors_share_storage_and_notice_replaced_tensors():
    """The tensors become views of one flat buffer (writes go both ways, values kept); a tensor whose data was
    replaced since is reported, and a new FlatTensors takes its current values in."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    params = list(module.parameters())
    values = [p.detach().clone() for p in params]
    flat = FlatTensors(params)
    assert flat.flat.numel() == sum(p.numel() for p in params)
    for param, value in zip(params, values, strict=True):
        torch.testing.assert_close(param, value, rtol=0, atol=0)
    with torch.no_grad():
        flat.flat.zero_()
    assert all((p == 0).all() for p in params)
    with torch.no_grad():
        params[1].fill_(2.0)
    assert (flat.views(flat.flat)[1] == 2.0).all()
    assert flat.holds(params)

    params[2].data = torch.ones_like(params[2])  # what module.to(...) or a reassignment does
    assert not flat.holds(params)
    rebuilt = FlatTensors(params)
    assert rebuilt.holds(params)
    assert (rebuilt.views(rebuilt.flat)[2] == 1.0).all()


def test_update_follows_replaced_optimizer_state(observation_spec, action_spec, make_batch):
    """optimizer.load_state_dict replaces the moment tensors: the compiled update picks the new ones up, keeps
    moving them, and matches an eager update given the same state."""
    loss = make_loss(observation_spec, action_spec)
    eager = CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=POLICY_DELAY, compile=False)
    for _ in range(POLICY_DELAY):
        eager(make_batch(BATCH))
    compiled_loss = copy.deepcopy(loss)
    compiled = CrossQUpdate(
        compiled_loss, make_crossq_optimizers(compiled_loss), policy_delay=POLICY_DELAY, compile=True
    )
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    for step in range(2 * POLICY_DELAY):
        batch = make_batch(BATCH)
        for update in (eager, compiled):
            torch.manual_seed(step)
            update(batch.clone())
    for name, want in loss.state_dict().items():
        assert_relative_close(compiled_loss.state_dict()[name], want, name)
    critic_state = compiled.optimizers.critic.state
    want_state = eager.optimizers.critic.state
    pairs = zip(compiled_loss.qvalue_network.parameters(), loss.qvalue_network.parameters(), strict=True)
    for param, want_param in pairs:
        assert_relative_close(critic_state[param]["exp_avg"], want_state[want_param]["exp_avg"], "exp_avg")
        assert critic_state[param]["step"] == want_state[want_param]["step"] == 3 * POLICY_DELAY


def test_other_optimizers_step_eagerly_on_compiled_gradients(observation_spec, action_spec, make_batch):
    """An optimizer other than Adam/AdamW (SGD with momentum) gets the compiled gradients and steps as eagerly."""
    losses = {compile: make_loss(observation_spec, action_spec) for compile in (False, True)}
    losses[True].load_state_dict(losses[False].state_dict())
    updates = {
        compile: CrossQUpdate(
            loss,
            make_crossq_optimizers(loss, optimizer_class=torch.optim.SGD, optimizer_kwargs={"momentum": 0.9}),
            policy_delay=POLICY_DELAY,
            compile=compile,
        )
        for compile, loss in losses.items()
    }
    before = {name: value.clone() for name, value in losses[True].state_dict().items()}
    for step in range(2 * POLICY_DELAY):
        batch = make_batch(BATCH)
        for update in updates.values():
            torch.manual_seed(step)
            update(batch.clone())
    for name, want in losses[False].state_dict().items():
        assert_relative_close(losses[True].state_dict()[name], want, name)
        if name.endswith("weight"):
            assert not torch.equal(want, before[name]), name

"""Tests of crossq_trl.BatchRenorm1d against Batch Renormalization written out by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from crossq_trl import BatchRenorm1d

EPS = 1e-3
R_MAX = 3.0
D_MAX = 5.0


def reference_brn(x, *, running_mean, running_var, steps, warmup_steps, weight, bias, detach_rd=True):
    """Batch Renormalization in train mode as the CrossQ authors' code, SBX and sb3-contrib compute it: batch
    norm with mean ``mu_b - d sqrt(var_b) / r`` and variance ``var_b / r^2``; statistics over every leading dim,
    biased variance."""
    flat = x.reshape(-1, x.shape[-1])
    mu_b = flat.mean(0)
    var_b = ((flat - mu_b) ** 2).mean(0)
    sigma_b = torch.sqrt(var_b + EPS)
    sigma_r = torch.sqrt(running_var + EPS)
    if steps >= warmup_steps:
        r = torch.clamp(sigma_b / sigma_r, 1.0 / R_MAX, R_MAX)
        d = torch.clamp((mu_b - running_mean) / sigma_r, -D_MAX, D_MAX)
        if detach_rd:
            r, d = r.detach(), d.detach()
    else:
        r, d = torch.ones_like(mu_b), torch.zeros_like(mu_b)
    mean = mu_b - d * torch.sqrt(var_b) / r
    var = var_b / r**2
    x_hat = (x - mean) / torch.sqrt(var + EPS)
    return weight * x_hat + bias


def set_state(layer, *, running_mean, running_var, steps, weight=None, bias=None):
    """Write buffers (and optionally the affine parameters) of a BatchRenorm1d by hand."""
    with torch.no_grad():
        layer.running_mean.copy_(running_mean)
        layer.running_var.copy_(running_var)
        layer.steps.fill_(steps)
        if weight is not None:
            layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)


def clipping_case():
    """A batch and running statistics for which r clips high, r clips low, d clips high, and one feature is inside."""
    x = torch.randn(8, 4) * torch.tensor([2.0, 1.0, 1.0, 1.2]) + torch.tensor([0.0, 0.0, 3.0, 0.5])
    running_mean = torch.tensor([0.0, 0.0, -20.0, 0.2])
    running_var = torch.tensor([0.01, 100.0, 1.0, 1.5])
    weight = torch.tensor([1.5, -0.5, 2.0, 0.7])
    bias = torch.tensor([0.1, 0.2, -0.3, 0.4])
    return x, running_mean, running_var, weight, bias


WARMUP = 4


@pytest.mark.parametrize("steps", [0, WARMUP - 1, WARMUP, 3 * WARMUP + 1])
def test_train_forward_matches_reference_before_at_and_after_warmup(steps):
    """Train-mode output equals the hand-written renorm formula (r=1, d=0 during warm-up; clipped r, d after)."""
    x, running_mean, running_var, weight, bias = clipping_case()
    sigma_b = torch.sqrt(x.var(0, unbiased=False) + EPS)
    sigma_r = torch.sqrt(running_var + EPS)
    raw_r = sigma_b / sigma_r
    raw_d = (x.mean(0) - running_mean) / sigma_r
    assert raw_r[0] > R_MAX and raw_r[1] < 1 / R_MAX and raw_d[2] > D_MAX  # the case really clips
    assert 1 / R_MAX < raw_r[3] < R_MAX and abs(raw_d[3]) < D_MAX and abs(raw_r[3] - 1) > 1e-2

    layer = BatchRenorm1d(4, eps=EPS, r_max=R_MAX, d_max=D_MAX, warmup_steps=WARMUP)
    set_state(layer, running_mean=running_mean, running_var=running_var, steps=steps, weight=weight, bias=bias)
    out = layer(x)
    expected = reference_brn(
        x,
        running_mean=running_mean,
        running_var=running_var,
        steps=steps,
        warmup_steps=WARMUP,
        weight=weight,
        bias=bias,
    )
    torch.testing.assert_close(out, expected)


def test_near_constant_feature_follows_the_authors_formula():
    """A feature that barely varies in the batch but sits far from its running mean (d clipped at d_max): the
    authors' formula gives ~2e-4 (computed by hand below), where Ioffe's ``(x - mu_b) / sigma_b * r + d`` gives
    ~d_max = 5. Float64, so that the tiny variance is exact enough to compare."""
    delta = 1e-6
    x = torch.tensor([[10.0], [10.0], [10.0], [10.0 + delta]], dtype=torch.float64)
    layer = BatchRenorm1d(1, eps=EPS, warmup_steps=0).double()  # running stats 0 and 1
    out = layer(x).squeeze(-1)
    # By hand: mu_b = 10 + delta/4, var_b = 3 delta^2 / 16, r = clip(sqrt(var_b + eps) / sqrt(1 + eps)) = 1/3,
    # d = clip(10 / sqrt(1 + eps)) = 5; x_hat = (r (x - mu_b) + d sqrt(var_b)) / sqrt(var_b + eps r^2).
    var_b = 3 * delta**2 / 16
    denominator = (var_b + EPS / 9) ** 0.5
    shift = 5 * var_b**0.5
    expected = [(-delta / 12 + shift) / denominator] * 3 + [(delta / 4 + shift) / denominator]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    assert out.min() > 1.9e-4 and out.max() < 2.4e-4
    ioffe = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + EPS) / 3.0 + D_MAX
    assert (ioffe - D_MAX).abs().max() < 1e-3  # the other formula really sits at d_max here


def test_constant_feature_has_finite_gradients():
    """An exactly constant feature (a dead ReLU) after warm-up: output 0 and finite (zero) gradients, not NaN
    (the authors' formula differentiates sqrt(var_b) at var_b = 0)."""
    x = torch.cat([torch.zeros(6, 1), torch.randn(6, 1)], 1).requires_grad_(True)
    layer = BatchRenorm1d(2, eps=EPS, warmup_steps=0)
    with torch.no_grad():
        layer.running_mean.fill_(0.5)
    out = layer(x)
    (out * torch.randn(6, 2)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    torch.testing.assert_close(out[:, 0], torch.zeros(6))


def test_correction_does_not_grow_after_several_warmups():
    """The renorm correction right after warm-up and at >3x warm-up is the same (no steps//warmup multiplier)."""
    x, running_mean, running_var, weight, bias = clipping_case()
    outputs = {}
    for steps in (0, WARMUP, 2 * WARMUP, 3 * WARMUP + 1, 10 * WARMUP):
        layer = BatchRenorm1d(4, eps=EPS, warmup_steps=WARMUP)
        set_state(layer, running_mean=running_mean, running_var=running_var, steps=steps, weight=weight, bias=bias)
        outputs[steps] = layer(x)
    assert not torch.allclose(outputs[0], outputs[WARMUP], atol=1e-2)  # the correction is active and non-trivial
    for steps in (2 * WARMUP, 3 * WARMUP + 1, 10 * WARMUP):
        torch.testing.assert_close(outputs[steps], outputs[WARMUP])


def test_running_stats_update_is_momentum_lerp_with_biased_variance():
    """Each train forward moves running mean/var by `momentum` toward batch mean / biased var and adds 1 to steps."""
    momentum = 0.2
    layer = BatchRenorm1d(3, momentum=momentum, warmup_steps=1)
    mean, var = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.3, 1.0])
    set_state(layer, running_mean=mean, running_var=var, steps=0)
    for expected_steps in (1, 2, 3):
        x = torch.randn(5, 3) * 3 + 1
        batch_mean = x.sum(0) / 5
        batch_var = ((x - batch_mean) ** 2).sum(0) / 5  # biased
        mean = mean + momentum * (batch_mean - mean)
        var = var + momentum * (batch_var - var)
        layer(x)
        torch.testing.assert_close(layer.running_mean, mean)
        torch.testing.assert_close(layer.running_var, var)
        assert layer.steps.item() == expected_steps


def test_batch_statistics_of_features_far_from_zero_keep_float32_precision():
    """The one-sweep statistics (mean and mean square of x minus a sample of the batch) lose nothing to cancellation
    on features whose mean dwarfs their spread, where E[x^2] - E[x]^2 in float32 would be off by orders of magnitude;
    the output and the input gradient match a float64 two-pass computation."""
    torch.manual_seed(0)
    offsets = torch.tensor([1e4, -3e3, 0.0, 50.0])
    x = (torch.randn(256, 4) * 0.1 + offsets).requires_grad_()
    naive_var = (x.detach().square().mean(0) - x.detach().mean(0).square()).double()
    x64 = x.detach().double()
    true_var = x64.var(0, unbiased=False)
    assert (naive_var[:2] - true_var[:2]).abs().max() > 10 * true_var[:2].max()  # what the shift avoids
    layer = BatchRenorm1d(4, momentum=1.0, warmup_steps=10)  # in warm-up: r = 1, d = 0
    set_state(layer, running_mean=offsets, running_var=torch.full((4,), 0.01), steps=0)
    out = layer(x)
    torch.testing.assert_close(layer.running_var.double(), true_var, rtol=1e-4, atol=0)
    torch.testing.assert_close(layer.running_mean.double(), x64.mean(0), rtol=1e-6, atol=1e-6)
    grad_out = torch.randn(256, 4)
    (out * grad_out).sum().backward()
    x64.requires_grad_()
    ones, zeros = torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    stats = {"running_mean": offsets.double(), "running_var": true_var, "steps": 0, "warmup_steps": 10}
    expected = reference_brn(x64, **stats, weight=ones, bias=zeros)
    (expected * grad_out.double()).sum().backward()
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)


def test_eval_uses_running_stats_and_changes_no_buffer():
    """Eval output is weight*(x-mu_r)/sqrt(var_r+eps)+bias; no buffer moves; [F] and [envs, time, F] inputs work."""
    layer = BatchRenorm1d(4, eps=EPS, warmup_steps=3)
    mean, var = torch.randn(4), torch.rand(4) + 0.5
    weight, bias = torch.randn(4), torch.randn(4)
    set_state(layer, running_mean=mean, running_var=var, steps=7, weight=weight, bias=bias)
    layer.eval()
    before = {name: buf.clone() for name, buf in layer.named_buffers()}

    x = torch.randn(6, 4)
    expected = weight * (x - mean) / torch.sqrt(var + EPS) + bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(x[2]), expected[2])  # one unbatched observation
    x3 = torch.randn(2, 5, 4)
    torch.testing.assert_close(layer(x3), weight * (x3 - mean) / torch.sqrt(var + EPS) + bias)

    for name, buf in layer.named_buffers():
        assert torch.equal(buf, before[name]), name


def test_train_on_envs_time_features_uses_all_leading_dims():
    """A [envs, time, F] batch is normalised with statistics over envs*time, like the flattened [N, F] batch."""
    x, running_mean, running_var, weight, bias = clipping_case()
    x3 = torch.cat([x, x * 0.5 + 1]).reshape(2, 8, 4)
    layer3 = BatchRenorm1d(4, eps=EPS, warmup_steps=WARMUP)
    set_state(layer3, running_mean=running_mean, running_var=running_var, steps=WARMUP, weight=weight, bias=bias)
    layer2 = copy.deepcopy(layer3)
    out3 = layer3(x3)
    out2 = layer2(x3.reshape(16, 4))
    assert out3.shape == (2, 8, 4)
    torch.testing.assert_close(out3.reshape(16, 4), out2)
    torch.testing.assert_close(layer3.running_mean, layer2.running_mean)
    torch.testing.assert_close(layer3.running_var, layer2.running_var)
    kwargs = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    torch.testing.assert_close(out3, reference_brn(x3, steps=WARMUP, warmup_steps=WARMUP, **kwargs))


def test_batch_of_one_stays_finite():
    """Train steps on a single sample (through warm-up and after) keep outputs and statistics finite, eval too."""
    layer = BatchRenorm1d(3, warmup_steps=2, momentum=0.5)
    for _ in range(6):
        out = layer(torch.randn(1, 3) * 5)
        assert torch.isfinite(out).all()
    assert torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()
    assert (layer.running_var >= 0).all()
    layer.eval()
    assert torch.isfinite(layer(torch.randn(10, 3))).all()
    assert torch.isfinite(layer(torch.randn(3))).all()


def test_no_gradient_through_r_and_d():
    """dL/dx equals the gradient of the formula with r and d detached, and differs from one that lets them carry it."""
    x0 = torch.randn(7, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([0.3, -0.2, 0.1])
    running_mean = torch.tensor([0.1, 0.4, -0.3])
    running_var = torch.tensor([0.8, 2.0, 0.5])
    weight, bias = torch.tensor([1.3, 0.6, -0.9]), torch.tensor([0.1, 0.0, 0.2])
    sigma_b = torch.sqrt(x0.var(0, unbiased=False) + EPS)
    sigma_r = torch.sqrt(running_var + EPS)
    r = sigma_b / sigma_r
    d = (x0.mean(0) - running_mean) / sigma_r
    assert ((r > 1 / R_MAX) & (r < R_MAX) & ((r - 1).abs() > 0.05)).all()  # r, d active but not clipped
    assert ((d.abs() < D_MAX) & (d.abs() > 0.05)).all()

    layer = BatchRenorm1d(3, eps=EPS, warmup_steps=0)
    set_state(layer, running_mean=running_mean, running_var=running_var, steps=0, weight=weight, bias=bias)
    upstream = torch.randn(7, 3)
    x = x0.clone().requires_grad_(True)
    (layer(x) * upstream).sum().backward()

    kwargs = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    grads = {}
    for detach in (True, False):
        xr = x0.clone().requires_grad_(True)
        out = reference_brn(xr, steps=0, warmup_steps=0, detach_rd=detach, **kwargs)
        (out * upstream).sum().backward()
        grads[detach] = xr.grad
    torch.testing.assert_close(x.grad, grads[True])
    assert not torch.allclose(grads[True], grads[False], atol=1e-3)  # the check can tell the two apart


def test_running_stats_converge_to_data_moments():
    """After many train steps on N(mean, std^2) data the running mean/var are close to mean and std^2."""
    mean = torch.tensor([3.0, -2.0, 0.5])
    std = torch.tensor([2.0, 0.5, 1.0])
    layer = BatchRenorm1d(3, momentum=0.05, warmup_steps=50)
    for _ in range(400):
        layer(torch.randn(512, 3) * std + mean)
    torch.testing.assert_close(layer.running_mean, mean, atol=0.1, rtol=0)
    torch.testing.assert_close(layer.running_var, std**2, rtol=0.08, atol=0)
    assert layer.steps.item() == 400


def test_state_dict_round_trip_continues_warmup():
    """A reloaded layer matches the original in eval and train mode, step for step across the warm-up boundary."""
    layer = BatchRenorm1d(4, warmup_steps=5, momentum=0.3)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    for _ in range(3):
        layer(torch.randn(8, 4) * 2 + 1)
    state = layer.state_dict()
    assert "steps" in state and state["steps"].item() == 3

    restored = BatchRenorm1d(4, warmup_steps=5, momentum=0.3)
    restored.load_state_dict(state)
    fresh_steps = BatchRenorm1d(4, warmup_steps=5, momentum=0.3)
    fresh_steps.load_state_dict({**state, "steps": torch.zeros((), dtype=torch.long)})

    x_eval = torch.randn(5, 4)
    layer.eval(), restored.eval()
    torch.testing.assert_close(restored(x_eval), layer(x_eval))
    layer.train(), restored.train()
    differs_from_reset = False
    for _ in range(4):  # steps 3..6: crosses warm-up at 5
        x = torch.randn(8, 4) * 3 - 1
        out = layer(x)
        torch.testing.assert_close(restored(x), out)
        differs_from_reset |= not torch.allclose(fresh_steps(x), out, atol=1e-4)
    for name, buf in layer.named_buffers():
        torch.testing.assert_close(restored.get_buffer(name), buf)
    assert restored.steps.item() == 7
    assert differs_from_reset  # a layer whose step counter was reset stays in warm-up and gives other outputs


@pytest.mark.parametrize("training", [True, False])
def test_ensemble_members_use_their_own_statistics(training):
    """ensemble_size=E matches E separate layers holding each member's parameters and buffers (stats updates too)."""
    n_members, features = 3, 4
    ensemble = BatchRenorm1d(features, ensemble_size=n_members, warmup_steps=2, momentum=0.1)
    means, variances = torch.randn(n_members, features), torch.rand(n_members, features) * 2 + 0.1
    weights, biases = torch.randn(n_members, features), torch.randn(n_members, features)
    set_state(ensemble, running_mean=means, running_var=variances, steps=5, weight=weights, bias=biases)
    singles = []
    for e in range(n_members):
        single = BatchRenorm1d(features, warmup_steps=2, momentum=0.1)
        set_state(single, running_mean=means[e], running_var=variances[e], steps=5, weight=weights[e], bias=biases[e])
        singles.append(single.train(training))
    ensemble.train(training)

    x = torch.randn(n_members, 6, features) * torch.tensor([[[1.0]], [[3.0]], [[0.2]]]) + torch.randn(n_members, 1, 4)
    out = ensemble(x)
    assert out.shape == x.shape
    for e, single in enumerate(singles):
        torch.testing.assert_close(out[e], single(x[e]))
        torch.testing.assert_close(ensemble.running_mean[e], single.running_mean)
        torch.testing.assert_close(ensemble.running_var[e], single.running_var)
    # the members' states really differ: member 0's layer gives another output on member 1's input
    assert not torch.allclose(out[1], copy.deepcopy(singles[0])(x[1]), atol=1e-3)


def test_compiled_fullgraph_matches_eager():
    """torch.compile(fullgraph=True) in train mode gives eager outputs, input/weight gradients and buffers, step by
    step across warm-up (after warm-up the backward must use this step's r, d, not the updated running stats)."""
    eager = BatchRenorm1d(4, warmup_steps=2, momentum=0.2)
    with torch.no_grad():
        eager.weight.uniform_(0.5, 1.5)
    module = copy.deepcopy(eager)
    compiled = torch.compile(module, fullgraph=True)
    for step in range(4):
        x = torch.randn(16, 4) * (step + 1) + step
        upstream = torch.randn(16, 4)
        results = []
        for layer, fn in ((eager, eager), (module, compiled)):
            layer.zero_grad(set_to_none=True)
            xg = x.clone().requires_grad_(True)
            out = fn(xg)
            (out * upstream).sum().backward()
            results.append((out.detach(), xg.grad, layer.weight.grad, layer.bias.grad))
        for got, want in zip(results[1], results[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        for name, buf in eager.named_buffers():
            torch.testing.assert_close(module.get_buffer(name), buf, rtol=1e-5, atol=1e-6)
    assert module.steps.item() == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_features": 0},
        {"momentum": 0.0},
        {"momentum": 1.5},
        {"eps": 0.0},
        {"r_max": 0.5},
        {"d_max": -1.0},
        {"warmup_steps": -1},
        {"ensemble_size": 0},
    ],
)
def test_constructor_rejects_bad_hyperparameters(kwargs):
    """Out-of-range hyperparameters raise ValueError naming the argument."""
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        BatchRenorm1d(**{"num_features": 3, **kwargs})


def test_wrong_input_shape_raises_clear_error():
    """Wrong feature size, wrong ensemble size and an unbatched train input raise ValueError saying what is expected."""
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        BatchRenorm1d(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\[E, \.\.\., 3\]"):
        BatchRenorm1d(3, ensemble_size=2)(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="ensemble axis"):
        BatchRenorm1d(3, ensemble_size=2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="batch dimension"):
        BatchRenorm1d(3).train()(torch.randn(3))

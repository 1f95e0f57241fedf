"""Shared fixtures: small specs with non-symmetric action bounds and a batch factory."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded

OBS_DIM = 3
ACT_DIM = 2
ACTION_LOW = -2.0
ACTION_HIGH = (1.0, 3.0)


# The test networks are tiny: one thread runs them fastest and keeps parallel test workers from oversubscribing.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Per test, since closing a ParallelEnv gives torch its default thread count back."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same RNG state (network init included)."""
    torch.manual_seed(0)


@pytest.fixture
def observation_spec() -> Composite:
    return Composite(observation=Unbounded((OBS_DIM,)))


@pytest.fixture
def action_spec() -> Bounded:
    return Bounded(ACTION_LOW, torch.tensor(ACTION_HIGH), (ACT_DIM,))


@pytest.fixture
def make_batch(action_spec):
    """Factory for a random transition batch ``[batch]`` with the TorchRL keys CrossQLoss reads."""

    def make(batch: int = 6, *, terminated=None, done=None) -> TensorDict:
        terminated = torch.zeros(batch, 1, dtype=torch.bool) if terminated is None else terminated
        done = terminated.clone() if done is None else done
        return TensorDict(
            {
                "observation": torch.randn(batch, OBS_DIM),
                "action": action_spec.rand((batch,)),
                ("next", "observation"): torch.randn(batch, OBS_DIM),
                ("next", "reward"): torch.randn(batch, 1),
                ("next", "done"): done,
                ("next", "terminated"): terminated,
            },
            [batch],
        )

    return make


# --- hand-written forward passes, read off the modules' weights and buffers -----------------------------------------


def hand_brn(x: torch.Tensor, layer, *, training: bool, member: int | None = None) -> torch.Tensor:
    """Batch Renormalization of ``x`` ([..., F]) written out from ``layer``'s buffers (one ensemble member if given)."""

    def pick(t):
        return t if member is None else t[member]

    mu_r, var_r = pick(layer.running_mean), pick(layer.running_var)
    weight, bias = pick(layer.weight), pick(layer.bias)
    sigma_r = torch.sqrt(var_r + layer.eps)
    if not training:
        x_hat = (x - mu_r) / sigma_r
    else:
        flat = x.reshape(-1, x.shape[-1])
        mu_b = flat.mean(0)
        var_b = ((flat - mu_b) ** 2).mean(0)
        sigma_b = torch.sqrt(var_b + layer.eps)
        if int(layer.steps) >= layer.warmup_steps:
            r = torch.clamp(sigma_b / sigma_r, 1 / layer.r_max, layer.r_max).detach()
            d = torch.clamp((mu_b - mu_r) / sigma_r, -layer.d_max, layer.d_max).detach()
        else:
            r, d = 1.0, 0.0
        # The authors' renorm: batch norm with mean mu_b - d sqrt(var_b) / r and variance var_b / r^2.
        x_hat = (x - (mu_b - d * var_b.sqrt() / r)) / torch.sqrt(var_b / r**2 + layer.eps)
    return weight * x_hat + bias


def hand_actor(net, obs: torch.Tensor, *, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` of a GaussianActorNet computed layer by layer from its weights (log_std clipped to [-20, 2])."""
    from crossq_trl import BatchRenorm1d

    x = obs
    inputs = []
    for layer in net.body:
        if isinstance(layer, BatchRenorm1d):
            inputs.append(x)
            x = hand_brn(x, layer, training=training)
        elif isinstance(layer, torch.nn.Linear):
            x = x @ layer.weight.T + layer.bias
        elif isinstance(layer, torch.nn.ReLU):
            x = torch.clamp(x, min=0)
        else:
            raise AssertionError(f"unexpected layer {layer}")
    loc = x @ net.mean.weight.T + net.mean.bias
    log_std = torch.clamp(x @ net.log_std.weight.T + net.log_std.bias, -20, 2)
    return loc, torch.exp(log_std)


def hand_critic(net, obs: torch.Tensor, act: torch.Tensor, *, training: bool, brn_inputs: list | None = None):
    """Q-values ``[*batch, E]`` of an EnsembleQNet, each member computed on its own from the stacked weights/buffers.

    ``brn_inputs``, if given, receives for each BRN layer the list of per-member inputs. The action, in the
    bounds of the ``action_spec`` fixture, enters mapped to [-1, 1].
    """
    from crossq_trl import BatchRenorm1d
    from crossq_trl.modules import EnsembleLinear

    low, high = torch.full((ACT_DIM,), ACTION_LOW), torch.tensor(ACTION_HIGH)
    act = 2 * (act - low) / (high - low) - 1
    outputs = []
    per_layer = [[] for _ in net.body]
    for e in range(net.n_critics):
        x = torch.cat([obs, act], -1)
        for i, layer in enumerate(net.body):
            if isinstance(layer, BatchRenorm1d):
                per_layer[i].append(x)
                x = hand_brn(x, layer, training=training, member=e)
            elif isinstance(layer, EnsembleLinear):
                x = x @ layer.weight[e].T + layer.bias[e]
            elif isinstance(layer, torch.nn.ReLU):
                x = torch.clamp(x, min=0)
            else:
                raise AssertionError(f"unexpected layer {layer}")
        outputs.append((x @ net.head.weight[e].T + net.head.bias[e]).squeeze(-1))
    if brn_inputs is not None:
        brn_inputs.extend(inputs for inputs in per_layer if inputs)
    return torch.stack(outputs, -1)


def randomize_brn(module: torch.nn.Module, *, steps: int | None = None) -> None:
    """Give every BatchRenorm1d in ``module`` random running statistics and affine parameters."""
    from crossq_trl import BatchRenorm1d

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, BatchRenorm1d):
                layer.running_mean.normal_(0, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(0, 0.2)
                if steps is not None:
                    layer.steps.fill_(steps)


@pytest.fixture
def ref():
    """Hand-written reference computations (see the functions above)."""
    import types

    return types.SimpleNamespace(brn=hand_brn, actor=hand_actor, critic=hand_critic, randomize_brn=randomize_brn)

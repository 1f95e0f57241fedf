"""Adam and AdamW as a pure tensor function, for optimizer steps inside a compiled update.

The state stays in the ``torch.optim`` optimizer (``exp_avg``, ``exp_avg_sq``, ``step``, in its own
format), so ``state_dict``, ``load_state_dict`` and a later eager ``optimizer.step()`` all keep
working; only the arithmetic of the step moves into the caller's graph. Written here rather than
tracing ``optimizer.step()`` because Inductor's CPU code for it recomputes the scalar bias
corrections (``beta ** step``, square roots) for every vector of every parameter and runs
``_foreach`` ops as one scalar loop. Here every scalar of a step is computed once, on the host,
from the param group (so changed hyperparameters apply at the next step, without recompiling),
and the graph only sees element-wise tensor work.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Adam, AdamW, Optimizer


def supports_functional_adam(optimizer: Optimizer) -> bool:
    """Plain Adam or AdamW (no amsgrad, maximize or differentiable): the steps :func:`adam_step_` reproduces."""
    return isinstance(optimizer, (Adam, AdamW)) and not any(
        group[flag] for group in optimizer.param_groups for flag in ("amsgrad", "maximize", "differentiable")
    )


def init_adam_state(optimizer: Optimizer) -> None:
    """Create the lazily initialised state of every parameter, as ``torch.optim.Adam`` would on its first step."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if state:
                continue
            on_device = group["fused"] or group["capturable"]
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def adam_scalars(optimizer: Optimizer, group: dict, step: int) -> list[float]:
    """The scalars of step number ``step`` (1 for the first) of ``group``, in the order :func:`adam_step_` reads
    them: ``lr / (1 - beta1^t)``, ``1 / sqrt(1 - beta2^t)``, ``eps``, ``1 - beta1``, ``beta2``, ``1 - beta2``, the
    decoupled (AdamW) decay factor ``1 - lr * weight_decay`` and the L2 (Adam) weight decay."""
    lr, (beta1, beta2), weight_decay = float(group["lr"]), group["betas"], group["weight_decay"]
    decoupled = isinstance(optimizer, AdamW) or bool(group.get("decoupled_weight_decay", False))
    return [
        lr / (1 - beta1**step),
        1 / math.sqrt(1 - beta2**step),
        group["eps"],
        1 - beta1,
        beta2,
        1 - beta2,
        1 - lr * weight_decay if decoupled else 1.0,
        0.0 if decoupled else weight_decay,
    ]


def adam_coefficients(optimizer: Optimizer, group: dict, step: int) -> Tensor:
    """:func:`adam_scalars` as one float32 tensor on the parameters' device, for :func:`adam_step_`."""
    values = adam_scalars(optimizer, group, step)
    return torch.tensor(values, dtype=torch.float32, device=group["params"][0].device)


def adam_step_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: Tensor, coef: Tensor) -> None:
    """One Adam(W) step of ``param`` in place with the scalars of :func:`adam_coefficients`; the arithmetic of
    ``torch.optim.Adam``'s single-tensor step, and its ``step`` counter moves too."""
    step_size, inv_bias_correction2_sqrt, eps, one_minus_beta1, beta2, one_minus_beta2, decay, l2 = coef.unbind()
    step.add_(1)
    param.mul_(decay)
    grad = grad + l2 * param
    exp_avg.lerp_(grad, one_minus_beta1)
    exp_avg_sq.mul_(beta2).add_(grad * grad * one_minus_beta2)
    param.sub_(step_size * exp_avg / (exp_avg_sq.sqrt() * inv_bias_correction2_sqrt + eps))

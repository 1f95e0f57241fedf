"""Batch Renormalization (Ioffe, 2017) as CrossQ uses it.

Written here rather than taken from ``torchrl.modules.BatchRenorm1d`` because that
class (torchrl 0.14.1) multiplies the renorm correction by an unclamped
``steps // warmup_steps`` counter (the correction doubles after 2x warm-up,
triples after 3x, ...), takes dim 1 as the feature dim (breaks on ``[envs, time,
features]`` batches and on single observations), returns NaN forever after a
train-mode batch of one sample, and fails under ``torch.compile`` with an
in-place autograd error on its step counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@torch.library.custom_op("crossq_trl::saved_for_backward", mutates_args=())
def _saved_for_backward(r: torch.Tensor) -> torch.Tensor:
    """A copy of ``r`` that ``torch.compile`` must save for the backward, never recompute.

    The renorm scale ``r`` and shift ``d`` are derived from the running statistics, which this
    forward updates in place. Under ``torch.compile`` the AOT min-cut partitioner may recompute
    such a value in the backward pass instead of saving it, and the backward then reads the
    buffers AFTER the update (torch 2.13: silently wrong gradients once ``r``, ``d`` are active;
    pytorch/pytorch PR #197039). An opaque op is never recomputed, so its output is saved.
    """
    return r.clone()


@_saved_for_backward.register_fake
def _(r):
    return torch.empty_like(r)


_barrier_enabled = True


@contextmanager
def renorm_barrier(enabled: bool) -> Iterator[None]:
    """Turn the ``saved_for_backward`` barrier on ``r`` and ``d`` off (or on) for the block.

    Only a compiled *autograd* backward needs it. Code that computes its gradients with
    ``torch.func`` inside the compiled function (as :class:`~crossq_trl.CrossQUpdate` does)
    compiles forward and backward as one graph that no partitioner splits, and turns the
    barrier off: it is an opaque Python call per layer and would keep Inductor from fusing.
    """
    global _barrier_enabled
    previous, _barrier_enabled = _barrier_enabled, enabled
    try:
        yield
    finally:
        _barrier_enabled = previous


class BatchRenorm1d(nn.Module):
    """Batch Renormalization over one feature axis, with statistics over every other axis.

    By default the features are the last axis (``feature_dim=-1``), so ``[batch, F]``,
    ``[envs, time, F]`` and (in eval mode) a single ``[F]`` observation all work. With
    ``ensemble_size=E`` the first axis is an ensemble axis of size ``E`` whose members keep
    independent statistics and affine parameters. ``feature_dim=1`` with an ensemble takes
    feature-major inputs ``[E, F, *batch]``: the layout of the critic ensemble, where the
    statistics are reductions along contiguous memory (several times faster on CPU than
    reducing across rows).

    Train mode:
        with ``r = clip(sigma_b / sigma_r, 1/r_max, r_max)`` and ``d = clip((mu_b - mu_r) /
        sigma_r, -d_max, d_max)``, both gradient-stopped, the batch is normalised with the
        mean ``mu_b - d * sqrt(var_b) / r`` and the variance ``var_b / r^2``:
        ``x_hat = (r (x - mu_b) + d sqrt(var_b)) / sqrt(var_b + eps r^2)``. That is the
        formula of the CrossQ authors' code, SBX and sb3-contrib; Ioffe's ``(x - mu_b) /
        sigma_b * r + d`` is the same up to ``eps`` but outputs up to ``d_max`` for a
        near-constant feature, where this one outputs ~0. During warm-up (``steps <
        warmup_steps``) ``r = 1``, ``d = 0``: plain batch norm (so is ``r_max=1, d_max=0``
        at any step). The running statistics then move toward the batch statistics by
        ``momentum`` and ``steps`` grows by one.
    Eval mode:
        ``x_hat = (x - mu_r) / sigma_r``; nothing is updated.

    Both modes end with the affine map ``weight * x_hat + bias``. Variances are
    biased (divided by ``n``) so that any batch size, one included, stays finite.
    The forward pass has no data-dependent Python branch and no host sync, so it
    traces with ``torch.compile(fullgraph=True)`` and can be captured in a CUDA graph.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.01,
        eps: float = 1e-3,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 100_000,
        ensemble_size: int | None = None,
        feature_dim: int = -1,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}.")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps}.")
        if r_max < 1.0:
            raise ValueError(f"r_max must be >= 1, got {r_max}.")
        if d_max < 0.0:
            raise ValueError(f"d_max must be >= 0, got {d_max}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        if ensemble_size is not None and ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1 or None, got {ensemble_size}.")
        if feature_dim not in (-1, 1) or (feature_dim == 1 and ensemble_size is None):
            raise ValueError(
                f"feature_dim must be -1 (features last) or 1 (feature-major [E, F, *batch], with an ensemble), "
                f"got {feature_dim} with ensemble_size={ensemble_size}."
            )
        self.num_features = num_features
        self.momentum = momentum
        self.eps = eps
        self.r_max = r_max
        self.d_max = d_max
        self.warmup_steps = warmup_steps
        self.ensemble_size = ensemble_size
        self.feature_dim = feature_dim
        shape = (num_features,) if ensemble_size is None else (ensemble_size, num_features)
        if affine:
            self.weight = nn.Parameter(torch.ones(shape))
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        ensemble = "" if self.ensemble_size is None else f", ensemble_size={self.ensemble_size}"
        layout = "" if self.feature_dim == -1 else f", feature_dim={self.feature_dim}"
        return (
            f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, r_max={self.r_max}, "
            f"d_max={self.d_max}, warmup_steps={self.warmup_steps}{ensemble}{layout}"
        )

    def _check_input(self, x: torch.Tensor) -> None:
        expected = {
            (None, -1): f"[..., {self.num_features}]",
            (True, -1): f"[E, ..., {self.num_features}]",
            (True, 1): f"[E, {self.num_features}, ...]",
        }[(None if self.ensemble_size is None else True, self.feature_dim)]
        min_dim = 1 if self.ensemble_size is None else 2
        if x.dim() < min_dim or x.shape[self.feature_dim] != self.num_features:
            raise ValueError(f"BatchRenorm1d expected input of shape {expected}, got {tuple(x.shape)}.")
        if self.ensemble_size is not None and x.shape[0] != self.ensemble_size:
            raise ValueError(
                f"BatchRenorm1d expected the ensemble axis (dim 0) of size {self.ensemble_size}, got {x.shape[0]}."
            )

    def _batch_dims(self, x: torch.Tensor) -> tuple[int, ...]:
        """The axes the batch statistics are taken over: all but the ensemble and feature axes."""
        feature_dim = self.feature_dim % x.dim()
        first = 0 if self.ensemble_size is None else 1
        return tuple(dim for dim in range(first, x.dim()) if dim != feature_dim)

    def _broadcast(self, stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """View a ``[F]`` or ``[E, F]`` statistic so that it broadcasts against ``x``."""
        shape = [1] * x.dim()
        shape[self.feature_dim] = self.num_features
        if self.ensemble_size is not None:
            shape[0] = self.ensemble_size
        return stat.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = x.to(self.running_mean.dtype)  # under bf16 autocast: statistics and normalisation stay in float32
        x_hat = self._normalize_train(x) if self.training else self._normalize_eval(x)
        if self.weight is None:
            return x_hat
        return x_hat * self._broadcast(self.weight, x) + self._broadcast(self.bias, x)

    def _normalize_eval(self, x: torch.Tensor) -> torch.Tensor:
        mean = self._broadcast(self.running_mean, x)
        std = (self._broadcast(self.running_var, x) + self.eps).sqrt()
        return (x - mean) / std

    def _normalize_train(self, x: torch.Tensor) -> torch.Tensor:
        batch_dims = self._batch_dims(x)
        if not batch_dims:
            raise ValueError(
                f"BatchRenorm1d in train mode needs a batch dimension, got input of shape "
                f"{tuple(x.shape)}; call .eval() to normalise a single sample."
            )
        # The statistics in one sweep over x: the mean and the mean square of x minus one sample of the batch
        # (gradient-stopped). The variance does not depend on the shift, and with a sample of the batch as shift
        # E[(x-s)^2] - E[x-s]^2 cancels little, where E[x^2] - E[x]^2 loses a feature far from zero. One sweep
        # here and one in the backward, instead of two each for a two-pass variance: 1.5-2% more updates/s
        # at [256, 256] on CPU, where these sweeps over [2 x 256, 512] activations are bound by memory.
        sample = x.detach()
        for dim in batch_dims:
            sample = sample.narrow(dim, 0, 1)
        shifted = x - sample
        shifted_mean = shifted.mean(batch_dims)
        batch_var = (shifted.square().mean(batch_dims) - shifted_mean.square()).clamp_min(0.0)
        with torch.no_grad():  # r, d and the running statistics: no gradient
            batch_mean = shifted_mean + sample.reshape(shifted_mean.shape)
            batch_std = (batch_var + self.eps).sqrt()
            running_std = (self.running_var + self.eps).sqrt()
            warmed_up = self.steps >= self.warmup_steps
            r = (batch_std / running_std).clamp(1.0 / self.r_max, self.r_max)
            d = ((batch_mean - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
            r = torch.where(warmed_up, r, 1.0)  # (r, d) = (1, 0) during warm-up
            d = torch.where(warmed_up, d, 0.0)
            if _barrier_enabled:
                r, d = _saved_for_backward(r), _saved_for_backward(d)
            self.running_mean.lerp_(batch_mean, self.momentum)
            self.running_var.lerp_(batch_var, self.momentum)
            self.steps.add_(1)
        # (r (x - mu_b) + d sqrt(var_b)) / sqrt(var_b + eps r^2), with x - mu_b = shifted - shifted_mean, as one
        # per-feature scale and shift of the shifted input. The gradient flows through var_b in both; clamp_min
        # keeps it finite (zero) for a constant feature, where sqrt' is inf.
        inv_std = (batch_var + self.eps * r.square()).rsqrt()
        scale = r * inv_std
        shift = d * batch_var.clamp_min(1e-20).sqrt() * inv_std - shifted_mean * scale
        return shifted * self._broadcast(scale, x) + self._broadcast(shift, x)

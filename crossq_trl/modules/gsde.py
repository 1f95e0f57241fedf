"""Generalized State-Dependent Exploration (gSDE, Raffin et al., CoRL 2021) for the CrossQ actor.

The exploration noise is ``eps(s) = theta(s)^T E``: the latent features ``theta(s)`` of the actor's last
hidden layer times a noise matrix ``E`` with ``N(0, std^2)`` entries, ``std`` a learned ``[features,
actions]`` parameter. While ``E`` is held fixed, the noise is a smooth function of the state, so
exploration is smooth in time. Semantics follow stable-baselines3:

* acting: ``E`` is drawn at the first acting step of each rollout (after :func:`reset_noise`) and every
  ``sample_freq`` acting steps within it (``-1``: only at the rollout start), one matrix per env;
* training: every training pass draws its own ``E`` from ``std`` (reparameterised, so ``log_std`` gets
  gradients), as sb3 draws a new matrix before each gradient step (sb3 shares one between the target and the
  actor pass of a step; here each pass, a separate compiled graph, draws its own). :func:`fresh_noise` selects
  this.

The features are not detached from the noise: sb3's SAC and CrossQ actors build their gSDE distribution with
``learn_features=True``, so the actor body also learns through the noise and its variance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tensordict.nn import InteractionType
from tensordict.nn.probabilistic import interaction_type
from torch import Tensor, nn
from torch.nn.functional import hardtanh

from crossq_trl.modules.mlp import concat_features, crossq_body

VARIANCE_EPS = 1e-6  # sb3's epsilon under the square root of the noise variance
SDE_DEFAULTS = {"log_std_init": -3.0, "use_expln": False, "clip_mean": 2.0, "sde_sample_freq": -1}  # sb3's


def unused_sde_options(use_sde: bool, **options: Any) -> list[str]:
    """The gSDE options (keys of :data:`SDE_DEFAULTS`) set away from their defaults although gSDE is off."""
    return [] if use_sde else [name for name, value in options.items() if value != SDE_DEFAULTS[name]]


def expln(log_std: Tensor) -> Tensor:
    """``exp(x)`` for ``x <= 0``, ``log(1 + x + 1e-6) + 1`` above (sb3's): a positive std that grows only slowly."""
    above = torch.log1p(log_std.clamp(min=0) + VARIANCE_EPS) + 1.0
    return torch.where(log_std <= 0, log_std.clamp(max=0).exp(), above)


def gsde_noise(latent: Tensor, matrices: Tensor) -> Tensor:
    """``theta(s)^T E``: ``latent`` ``[*batch, F]`` times the exploration matrices ``[n, F, A]``.

    With one matrix per row of a ``[n, F]`` batch (one per env), each row gets its own; otherwise every
    row gets the first matrix (sb3's single exploration matrix).
    """
    if matrices.shape[0] > 1 and latent.shape[:-1] == matrices.shape[:1]:
        return (latent.unsqueeze(-2) @ matrices).squeeze(-2)
    return latent @ matrices[0]


class GSDEActorNet(nn.Module):
    """The CrossQ actor with a gSDE head: ``body -> latent``; ``loc = hardtanh(Linear(latent), -clip_mean,
    clip_mean)``; returns ``(loc, scale, noise)`` of the pre-tanh Gaussian (see :mod:`crossq_trl.modules.gsde`).

    ``scale = sqrt(latent^2 @ std^2 + 1e-6)`` is the std of the noise given the features, ``std = exp(log_std)``
    (or ``expln(log_std)`` with ``use_expln``), ``log_std`` a ``[F, A]`` parameter initialised to
    ``log_std_init``. ``clip_mean = 0`` leaves the mean unclipped. The acting matrices and the step count since
    the rollout start are saved with the module's ``state_dict`` (as extra state), so a resumed run draws the
    same noise.

    Outside :func:`fresh_noise`, a forward pass under a random interaction type (TorchRL's default) is one
    acting step (see :meth:`acting_matrices`); under a deterministic one it draws nothing.
    """

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        net_arch: Sequence[int],
        *,
        log_std_init: float = -3.0,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        sample_freq: int = -1,
        **body_kwargs,
    ) -> None:
        super().__init__()
        if sample_freq == 0 or sample_freq < -1:
            raise ValueError(
                f"sde_sample_freq must be -1 (a new noise matrix at each rollout start only) or >= 1 (also every "
                f"that many steps), got {sample_freq}."
            )
        if clip_mean < 0:
            raise ValueError(f"clip_mean must be >= 0 (0: no clipping), got {clip_mean}.")
        self.body = crossq_body(in_features, net_arch, **body_kwargs)
        self.mean = nn.Linear(net_arch[-1], action_dim)
        self.log_std = nn.Parameter(torch.full((net_arch[-1], action_dim), float(log_std_init)))
        self.use_expln, self.clip_mean, self.sample_freq = use_expln, float(clip_mean), sample_freq
        self.fresh_noise = False  # set by fresh_noise(): draw E in each pass instead of using the acting matrices
        # Drawn at the first acting step. Not a buffer: its first dimension follows the number of envs acting, and
        # the training update flattens the loss's buffers; saved as extra state, moved by _apply.
        self.exploration_matrices = torch.zeros(1, *self.log_std.shape)
        self.steps_since_reset = 0

    def std(self) -> Tensor:
        """The std of the entries of ``E``, ``[F, A]``."""
        return expln(self.log_std) if self.use_expln else self.log_std.exp()

    def latent_and_mean(self, *observations: Tensor) -> tuple[Tensor, Tensor]:
        """The latent features ``theta(s)`` and the (clipped) mean of the pre-tanh Gaussian."""
        latent = self.body(concat_features(observations))
        loc = self.mean(latent)
        if self.clip_mean > 0:
            loc = hardtanh(loc, -self.clip_mean, self.clip_mean)
        return latent, loc

    def forward(self, *observations: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        latent, loc = self.latent_and_mean(*observations)
        std = self.std()
        scale = torch.sqrt(latent.pow(2) @ std.pow(2) + VARIANCE_EPS)
        if self.fresh_noise:  # normal_, not randn_like: Inductor runs it as aten's, so compiled == eager draws
            noise = latent @ (std * torch.empty_like(std).normal_())
        elif interaction_type() in (InteractionType.RANDOM, None):
            noise = gsde_noise(latent, self.acting_matrices(latent.shape[:-1].numel()))
        else:  # the mode is asked for: no acting step, no noise
            noise = torch.zeros_like(loc)
        return loc.float(), scale.float(), noise.float()  # float32 under autocast

    def acting_matrices(self, batch_size: int) -> Tensor:
        """The exploration matrices for one acting step of ``batch_size`` envs, drawn anew first when due: at the
        first step after :meth:`reset_noise` and every ``sample_freq`` steps."""
        due = self.sample_freq > 0 and self.steps_since_reset % self.sample_freq == 0
        if self.steps_since_reset == 0 or due:
            std = self.std().detach()
            self.exploration_matrices = std * torch.randn(batch_size, *std.shape, device=std.device)
        self.steps_since_reset += 1
        return self.exploration_matrices

    def reset_noise(self) -> None:
        """Start a new rollout: the next acting step draws new exploration matrices (no random number drawn now)."""
        self.steps_since_reset = 0

    def get_extra_state(self) -> dict[str, Any]:
        return {"exploration_matrices": self.exploration_matrices.clone(), "steps_since_reset": self.steps_since_reset}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.exploration_matrices = state["exploration_matrices"].to(self.log_std.device)
        self.steps_since_reset = int(state["steps_since_reset"])

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.exploration_matrices = fn(self.exploration_matrices)
        return self


def _gsde_heads(module: nn.Module) -> list[GSDEActorNet]:
    return [submodule for submodule in module.modules() if isinstance(submodule, GSDEActorNet)]


def has_gsde(module: nn.Module) -> bool:
    """Whether ``module`` holds a gSDE actor head."""
    return bool(_gsde_heads(module))


def reset_noise(module: nn.Module) -> None:
    """Start a new rollout for every gSDE actor in ``module`` (an actor, an :class:`ActingPolicy`, a sequence):
    new exploration matrices from the next acting step on, as sb3 does at the start of each rollout."""
    heads = _gsde_heads(module)
    if not heads:
        raise ValueError(
            f"reset_noise: {type(module).__name__} holds no gSDE actor; build the actor with "
            "make_crossq_actor(..., use_sde=True)."
        )
    for head in heads:
        head.reset_noise()


@contextmanager
def fresh_noise(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every gSDE actor in ``module`` draws a new exploration matrix in each pass from its
    ``log_std`` (reparameterised) instead of acting with its stored ones: the training-time noise, which
    sb3 resamples before each gradient step. A no-op for modules without gSDE; safe inside ``torch.compile``."""
    heads = [head for head in _gsde_heads(module) if not head.fresh_noise]
    for head in heads:
        head.fresh_noise = True
    try:
        yield module
    finally:
        for head in heads:
            head.fresh_noise = False

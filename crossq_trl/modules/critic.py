"""CrossQ critic: an ensemble of Q-networks evaluated in one batched pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from crossq_trl.modules.ensemble_linear import EnsembleLinear
from crossq_trl.modules.mlp import BatchRenormConfig, concat_features, crossq_body
from crossq_trl.modules.specs import feature_dim, resolve_specs


class EnsembleQNet(nn.Module):
    """``n_critics`` independent Q-networks ``BRN(cat(obs, a)) -> [Linear -> act -> BRN] x n -> Linear(1)``.

    Weights are stacked on a leading ensemble axis and every layer is one batched
    matmul, so the ensemble costs one pass; each member has its own parameters and
    its own BRN statistics. The body runs feature-major (``[E, features, batch]``), where
    the BRN statistics are contiguous reductions and the Q head a fast product.
    Returns Q-values of shape ``[*batch, n_critics]``.

    With ``action_bounds=(low, high)`` the last input, the action in env units, is mapped to
    ``[-1, 1]`` first, as the reference implementations feed it (their replay buffers hold the
    policy's squashed action): without an input batch norm, the scale of the action's bounds
    would otherwise change learning. The replay buffer keeps what the env got.
    """

    def __init__(
        self,
        in_features: int,
        net_arch: Sequence[int],
        n_critics: int = 2,
        *,
        action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        **body_kwargs,
    ) -> None:
        super().__init__()
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}.")
        self.n_critics = n_critics
        self.body = crossq_body(in_features, net_arch, ensemble_size=n_critics, **body_kwargs)
        self.head = EnsembleLinear(n_critics, net_arch[-1], 1, feature_dim=1)
        self.scales_action = action_bounds is not None
        if self.scales_action:
            low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in action_bounds)
            # Not persistent: rebuilt from the action spec, so state_dicts stay as they were.
            self.register_buffer("action_center", (high + low) / 2, persistent=False)
            self.register_buffer("action_half_range", (high - low) / 2, persistent=False)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.scales_action:
            *observations, action = inputs
            inputs = (*observations, (action - self.action_center) / self.action_half_range)
        x = concat_features(inputs)
        batch_shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).T  # [features, N]
        q = self.head(self.body(x.expand(self.n_critics, *x.shape)))  # [E, 1, N]
        return q.view(self.n_critics, -1).T.reshape(*batch_shape, self.n_critics).float()  # float32 under autocast


def make_crossq_critic(
    env: EnvBase | None = None,
    *,
    observation_spec: TensorSpec | None = None,
    action_spec: TensorSpec | None = None,
    in_keys: Sequence[NestedKey] = ("observation",),
    action_key: NestedKey | None = None,
    out_key: NestedKey = "state_action_value",
    n_critics: int = 2,
    net_arch: Sequence[int] = (1024, 1024),
    activation: type[nn.Module] = nn.ReLU,
    batch_norm: bool = True,
    batch_renorm: BatchRenormConfig = BatchRenormConfig(),
    device: torch.device | str | None = None,
) -> TensorDictModule:
    """Build the CrossQ critic ensemble as a ``TensorDictModule``.

    Reads ``in_keys`` and the action (in env units; the critic sees it mapped to ``[-1, 1]`` by the
    bounds of ``action_spec``), writes ``out_key`` of shape ``[*batch, n_critics]``.
    """
    observation_spec, action_spec = resolve_specs(env, observation_spec, action_spec)
    if action_key is None:
        action_key = env.action_key if env is not None else "action"
    in_keys = list(in_keys)
    net = EnsembleQNet(
        feature_dim(observation_spec, in_keys) + action_spec.shape[-1],
        net_arch,
        n_critics,
        action_bounds=(action_spec.space.low, action_spec.space.high),
        activation=activation,
        batch_norm=batch_norm,
        batch_renorm=batch_renorm,
    ).to(device)
    return TensorDictModule(net, in_keys=[*in_keys, action_key], out_keys=[out_key])

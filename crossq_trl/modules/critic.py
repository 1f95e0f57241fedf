"""CrossQ critic: an ensemble of Q-networks evaluated in one batched pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from crossq_trl.modules.categorical import CategoricalSupport
from crossq_trl.modules.ensemble_linear import EnsembleLinear
from crossq_trl.modules.features import FEATURES_KEY, ObservationFeatures
from crossq_trl.modules.mlp import BatchRenormConfig, concat_features, crossq_body
from crossq_trl.modules.specs import feature_dim, resolve_specs
from crossq_trl.modules.weight_norm import mark_unit_norm


class EnsembleQNet(nn.Module):
    """``n_critics`` independent Q-networks ``BRN(cat(obs, a)) -> [Linear -> act -> BRN] x n -> Linear(1)``.

    Weights are stacked on a leading ensemble axis and every layer is one batched
    matmul, so the ensemble costs one pass; each member has its own parameters and
    its own BRN statistics. The body runs feature-major (``[E, features, batch]``), where
    the BRN statistics are contiguous reductions and the Q head a fast product.
    Returns Q-values of shape ``[*batch, n_critics]``.

    With ``categorical=CategoricalSupport(...)`` each member outputs one logit per atom of the support (XQC's
    distributional critic) and the forward returns ``(Q, log_probs)``: the expected values ``[*batch,
    n_critics]`` and the log-probabilities ``[*batch, n_critics, num_bins]``. ``weight_norm_head=True`` marks the
    head (weights only) for the unit-norm projection, as XQC's ``normalize_last_layer``.

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
        categorical: CategoricalSupport | None = None,
        weight_norm_head: bool = False,
        **body_kwargs,
    ) -> None:
        super().__init__()
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}.")
        self.n_critics = n_critics
        self.categorical = categorical
        self.body = crossq_body(in_features, net_arch, ensemble_size=n_critics, **body_kwargs)
        outputs = 1 if categorical is None else categorical.num_bins
        self.head = EnsembleLinear(n_critics, net_arch[-1], outputs, feature_dim=1)
        if weight_norm_head:
            mark_unit_norm(self.head, with_bias=False)
        if categorical is not None:
            self.register_buffer("atoms", categorical.atoms(), persistent=False)
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
        out = self.head(self.body(x.expand(self.n_critics, *x.shape))).float()  # [E, 1 or bins, N], float32
        if self.categorical is None:
            return out.view(self.n_critics, -1).T.reshape(*batch_shape, self.n_critics)
        log_probs = out.log_softmax(1).permute(2, 0, 1).reshape(*batch_shape, self.n_critics, -1)
        return (log_probs.exp() * self.atoms).sum(-1), log_probs


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
    pre_activation_norm: bool = False,
    weight_norm: bool = False,
    weight_norm_head: bool = False,
    categorical: CategoricalSupport | None = None,
    log_probs_key: NestedKey = "state_action_value_log_probs",
    features_extractor: nn.Module | None = None,
    share_features_extractor: bool = False,
    device: torch.device | str | None = None,
) -> TensorDictModule | TensorDictSequential:
    """Build the CrossQ critic ensemble as a ``TensorDictModule``.

    Reads ``in_keys`` and the action (in env units; the critic sees it mapped to ``[-1, 1]`` by the
    bounds of ``action_spec``), writes ``out_key`` of shape ``[*batch, n_critics]``. A categorical critic
    (``categorical=CategoricalSupport(...)``) also writes ``log_probs_key``, ``[*batch, n_critics, num_bins]``.
    ``pre_activation_norm``, ``weight_norm`` and ``weight_norm_head``: see :func:`crossq_body` and
    :class:`EnsembleQNet`.

    With a ``features_extractor`` the ensemble reads its features (with the action) instead of the concatenated
    ``in_keys``: a ``TensorDictSequential(ObservationFeatures(extractor, in_keys), ensemble)``, whose joint
    ``[s, s']`` pass in :class:`~crossq_trl.CrossQLoss` runs the extractor on the joint batch too. An extractor
    of its own is trained by the critic loss. ``share_features_extractor=True`` says the extractor is the
    actor's: as in sb3, the critic then reads its features without gradient (the actor loss alone trains it), and
    the extractor stays the actor's module (not a submodule of the critic: the critic's optimizer and ``state_dict``
    leave it out).
    """
    observation_spec, action_spec = resolve_specs(env, observation_spec, action_spec)
    if action_key is None:
        action_key = env.action_key if env is not None else "action"
    in_keys = list(in_keys)
    if share_features_extractor and features_extractor is None:
        raise ValueError("share_features_extractor=True needs the actor's features_extractor.")
    features = None
    if features_extractor is not None:
        features = ObservationFeatures(features_extractor.to(device), in_keys, shared=share_features_extractor)
    in_features = feature_dim(observation_spec, in_keys) if features is None else features.features_dim
    net = EnsembleQNet(
        in_features + action_spec.shape[-1],
        net_arch,
        n_critics,
        action_bounds=(action_spec.space.low, action_spec.space.high),
        activation=activation,
        batch_norm=batch_norm,
        batch_renorm=batch_renorm,
        pre_activation_norm=pre_activation_norm,
        weight_norm=weight_norm,
        weight_norm_head=weight_norm_head,
        categorical=categorical,
    ).to(device)
    out_keys = [out_key] if categorical is None else [out_key, log_probs_key]
    if features is None:
        return TensorDictModule(net, in_keys=[*in_keys, action_key], out_keys=out_keys)
    return TensorDictSequential(features, TensorDictModule(net, in_keys=[FEATURES_KEY, action_key], out_keys=out_keys))

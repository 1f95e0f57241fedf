"""CrossQ actor: a tanh-squashed Gaussian policy with Batch Renormalization."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import InteractionType, TensorDictModule, TensorDictModuleBase, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase
from torchrl.modules import ProbabilisticActor, TanhNormal

from crossq_trl.modules.features import FEATURES_KEY, ObservationFeatures
from crossq_trl.modules.gsde import GSDEActorNet, unused_sde_options
from crossq_trl.modules.gsde_distribution import GSDETanhNormal
from crossq_trl.modules.mlp import BatchRenormConfig, concat_features, crossq_body
from crossq_trl.modules.specs import feature_dim, resolve_specs
from crossq_trl.modules.weight_norm import mark_unit_norm

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class GaussianActorNet(nn.Module):
    """``body -> (mean, log_std)`` heads; returns ``(loc, scale)`` of the pre-tanh Gaussian."""

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        net_arch: Sequence[int],
        *,
        weight_norm_head: bool = False,
        **body_kwargs,
    ) -> None:
        super().__init__()
        self.body = crossq_body(in_features, net_arch, **body_kwargs)
        self.mean = nn.Linear(net_arch[-1], action_dim)
        self.log_std = nn.Linear(net_arch[-1], action_dim)
        if weight_norm_head:  # XQC's normalize_last_layer: the heads' weights, not their biases
            for head in (self.mean, self.log_std):
                mark_unit_norm(head, with_bias=False)

    def forward(self, *observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(concat_features(observations))
        log_std = self.log_std(features).float().clamp(LOG_STD_MIN, LOG_STD_MAX)  # float32 under autocast
        return self.mean(features).float(), log_std.exp()


def make_crossq_actor(
    env: EnvBase | None = None,
    *,
    observation_spec: TensorSpec | None = None,
    action_spec: TensorSpec | None = None,
    in_keys: Sequence[NestedKey] = ("observation",),
    action_key: NestedKey | None = None,
    net_arch: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    batch_norm: bool = True,
    batch_renorm: BatchRenormConfig = BatchRenormConfig(),
    pre_activation_norm: bool = False,
    weight_norm: bool = False,
    weight_norm_head: bool = False,
    use_sde: bool = False,
    log_std_init: float = -3.0,
    use_expln: bool = False,
    clip_mean: float = 2.0,
    sde_sample_freq: int = -1,
    features_extractor: nn.Module | None = None,
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """Build the CrossQ actor as a TorchRL ``ProbabilisticActor``.

    Layout ``BRN -> [Linear -> activation -> BRN] x len(net_arch) -> mean, log_std``;
    ``log_std`` is clipped to ``[-20, 2]`` and the Gaussian is tanh-squashed and
    rescaled to the action bounds (``TanhNormal``, whose ``rsample_and_log_prob``
    scores the exact pre-tanh sample, so the log-prob stays finite when tanh
    saturates). Interaction is stochastic by default; under
    ``set_exploration_type(ExplorationType.DETERMINISTIC)`` it returns the squashed mean.

    With ``use_sde=True`` the head is gSDE's (:class:`~crossq_trl.modules.gsde.GSDEActorNet`, sb3's
    ``log_std_init``, ``use_expln`` and ``clip_mean``): the mean is clipped to ``[-clip_mean, clip_mean]``
    with a hard tanh, the noise is ``theta(s)^T E`` with ``E`` redrawn at each rollout start
    (:func:`~crossq_trl.modules.gsde.reset_noise`) and every ``sde_sample_freq`` acting steps, and the
    distribution is a :class:`~crossq_trl.modules.gsde_distribution.GSDETanhNormal`.

    ``pre_activation_norm`` and ``weight_norm`` shape the body (:func:`~crossq_trl.modules.crossq_body`);
    ``weight_norm_head`` keeps the mean and log-std heads' weights at unit norm per output (XQC).

    Observations and actions come from ``env`` or from explicit specs. The actor comes back in
    ``eval()`` mode, its acting mode: BRN normalises with its running statistics and leaves them
    untouched, so a collector running it never moves them by accident (in train mode every
    collected batch would update them). :class:`CrossQLoss` picks the mode of each of its own
    passes whatever the mode outside.

    With a ``features_extractor`` (:mod:`crossq_trl.modules.features`, e.g. a
    :class:`~crossq_trl.modules.features.FlattenExtractor` for Dict observations) the network reads its
    ``features_dim`` features instead of the concatenated ``in_keys``: the actor's module is then
    ``TensorDictSequential(ObservationFeatures(extractor, in_keys), network)``, and the actor loss trains the
    extractor with the rest of the actor.
    """
    observation_spec, action_spec = resolve_specs(env, observation_spec, action_spec)
    if action_key is None:
        action_key = env.action_key if env is not None else "action"
    unused = unused_sde_options(
        use_sde, log_std_init=log_std_init, use_expln=use_expln, clip_mean=clip_mean, sde_sample_freq=sde_sample_freq
    )
    if unused:
        raise ValueError(f"{unused} only apply to a gSDE actor: pass use_sde=True, or leave them at their defaults.")
    if use_sde and weight_norm_head:
        raise ValueError("weight_norm_head is not available with the gSDE head (use_sde=True); leave it False.")
    in_keys = list(in_keys)
    body = {
        "activation": activation,
        "batch_norm": batch_norm,
        "batch_renorm": batch_renorm,
        "pre_activation_norm": pre_activation_norm,
        "weight_norm": weight_norm,
    }
    features = None if features_extractor is None else ObservationFeatures(features_extractor.to(device), in_keys)
    in_features = feature_dim(observation_spec, in_keys) if features is None else features.features_dim
    sizes = (in_features, action_spec.shape[-1], net_arch)
    if use_sde:
        sde = {"log_std_init": log_std_init, "use_expln": use_expln, "clip_mean": clip_mean}
        net = GSDEActorNet(*sizes, **sde, sample_freq=sde_sample_freq, **body).to(device)
        dist_keys, dist_class, dist_kwargs = ["loc", "scale", "noise"], GSDETanhNormal, {}
    else:
        net = GaussianActorNet(*sizes, weight_norm_head=weight_norm_head, **body).to(device)
        dist_keys, dist_class, dist_kwargs = ["loc", "scale"], TanhNormal, {"tanh_loc": False}
    device = next(net.parameters()).device
    module: TensorDictModuleBase = TensorDictModule(net, in_keys=in_keys, out_keys=dist_keys)
    if features is not None:
        module = TensorDictSequential(features, TensorDictModule(net, in_keys=[FEATURES_KEY], out_keys=dist_keys))
    actor = ProbabilisticActor(
        module,
        in_keys=dist_keys,
        out_keys=[action_key],
        spec=action_spec.to(device),
        distribution_class=dist_class,
        distribution_kwargs={
            "low": action_spec.space.low.to(device),
            "high": action_spec.space.high.to(device),
            **dist_kwargs,
        },
        default_interaction_type=InteractionType.RANDOM,
    )
    return actor.eval()

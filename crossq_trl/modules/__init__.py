"""Networks and layers: Batch Renormalization, the CrossQ actor, the critic ensemble (scalar or categorical) and
weight normalization."""

from crossq_trl.modules.acting import ActingPolicy
from crossq_trl.modules.actor import GaussianActorNet, make_crossq_actor
from crossq_trl.modules.batch_renorm import BatchRenorm1d
from crossq_trl.modules.categorical import CategoricalSupport
from crossq_trl.modules.critic import EnsembleQNet, make_crossq_critic
from crossq_trl.modules.ensemble_linear import EnsembleLinear
from crossq_trl.modules.gsde import GSDEActorNet, fresh_noise, reset_noise
from crossq_trl.modules.gsde_distribution import GSDETanhNormal
from crossq_trl.modules.mlp import BatchRenormConfig, crossq_body
from crossq_trl.modules.modes import training_mode
from crossq_trl.modules.qvalue_ensemble import QValueEnsemble
from crossq_trl.modules.weight_norm import mark_unit_norm, project_weights_

__all__ = [
    "ActingPolicy",
    "BatchRenorm1d",
    "BatchRenormConfig",
    "CategoricalSupport",
    "EnsembleLinear",
    "EnsembleQNet",
    "GSDEActorNet",
    "GSDETanhNormal",
    "GaussianActorNet",
    "QValueEnsemble",
    "crossq_body",
    "fresh_noise",
    "make_crossq_actor",
    "make_crossq_critic",
    "mark_unit_norm",
    "project_weights_",
    "reset_noise",
    "training_mode",
]

"""Networks and layers: Batch Renormalization, the CrossQ actor and the critic ensemble."""

from crossq_trl.modules.acting import ActingPolicy
from crossq_trl.modules.actor import GaussianActorNet, make_crossq_actor
from crossq_trl.modules.batch_renorm import BatchRenorm1d
from crossq_trl.modules.critic import EnsembleQNet, make_crossq_critic
from crossq_trl.modules.ensemble_linear import EnsembleLinear
from crossq_trl.modules.gsde import GSDEActorNet, fresh_noise, reset_noise
from crossq_trl.modules.gsde_distribution import GSDETanhNormal
from crossq_trl.modules.mlp import BatchRenormConfig, crossq_body
from crossq_trl.modules.modes import training_mode
from crossq_trl.modules.qvalue_ensemble import QValueEnsemble

__all__ = [
    "ActingPolicy",
    "BatchRenorm1d",
    "BatchRenormConfig",
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
    "reset_noise",
    "training_mode",
]

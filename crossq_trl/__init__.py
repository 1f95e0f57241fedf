"""CrossQ for TorchRL: Batch Renormalization, joint-batch critic, no target networks."""

from crossq_trl.agent import CrossQ
from crossq_trl.modules import (
    ActingPolicy,
    BatchRenorm1d,
    BatchRenormConfig,
    EnsembleQNet,
    make_crossq_actor,
    make_crossq_critic,
    training_mode,
)
from crossq_trl.objectives import CrossQLoss
from crossq_trl.training import (
    CheckpointError,
    CheckpointSaveError,
    CrossQConfig,
    CrossQOptimizers,
    CrossQTrainer,
    CrossQUpdate,
    EnvStepError,
    NonFiniteError,
    TrainingInterrupted,
    evaluate_policy,
    make_crossq_optimizers,
    make_env,
    make_replay_buffer,
)

__all__ = [
    "ActingPolicy",
    "BatchRenorm1d",
    "BatchRenormConfig",
    "CheckpointError",
    "CheckpointSaveError",
    "CrossQ",
    "CrossQConfig",
    "CrossQLoss",
    "CrossQOptimizers",
    "CrossQTrainer",
    "CrossQUpdate",
    "EnsembleQNet",
    "EnvStepError",
    "NonFiniteError",
    "TrainingInterrupted",
    "evaluate_policy",
    "make_crossq_actor",
    "make_crossq_critic",
    "make_crossq_optimizers",
    "make_env",
    "make_replay_buffer",
    "training_mode",
]
__version__ = "0.2.0"

"""CrossQ for TorchRL: Batch Renormalization, joint-batch critic, no target networks."""

from crossq_trl.agent import CrossQ
from crossq_trl.exploration import (
    AdditiveActionNoise,
    GaussianActionNoise,
    GSDERolloutReset,
    OrnsteinUhlenbeckActionNoise,
    SB3ActionNoise,
    make_action_noise,
)
from crossq_trl.modules import (
    ActingPolicy,
    BatchRenorm1d,
    BatchRenormConfig,
    EnsembleQNet,
    make_crossq_actor,
    make_crossq_critic,
    reset_noise,
    training_mode,
)
from crossq_trl.modules.features import FlattenExtractor, ObservationFeatures
from crossq_trl.objectives import CrossQLoss
from crossq_trl.replay.her import HerReplayBuffer
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
    "AdditiveActionNoise",
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
    "FlattenExtractor",
    "GSDERolloutReset",
    "GaussianActionNoise",
    "HerReplayBuffer",
    "NonFiniteError",
    "ObservationFeatures",
    "OrnsteinUhlenbeckActionNoise",
    "SB3ActionNoise",
    "TrainingInterrupted",
    "evaluate_policy",
    "make_action_noise",
    "make_crossq_actor",
    "make_crossq_critic",
    "make_crossq_optimizers",
    "make_env",
    "make_replay_buffer",
    "reset_noise",
    "training_mode",
]
__version__ = "0.2.0"

"""The training stack: config, envs, the compiled update, the Trainer, checkpoints, faults."""

from crossq_trl.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from crossq_trl.training.config import CrossQConfig
from crossq_trl.training.envs import make_env
from crossq_trl.training.evaluation import evaluate_policy
from crossq_trl.training.faults import CheckpointSaveError, EnvStepError, NonFiniteError, TrainingInterrupted
from crossq_trl.training.replay_buffer import make_replay_buffer
from crossq_trl.training.trainer import CrossQTrainer, UpdateSchedule
from crossq_trl.training.update import CrossQOptimizers, CrossQUpdate, make_crossq_optimizers

__all__ = [
    "CheckpointError",
    "CheckpointSaveError",
    "CrossQConfig",
    "CrossQOptimizers",
    "CrossQTrainer",
    "CrossQUpdate",
    "EnvStepError",
    "NonFiniteError",
    "TrainingInterrupted",
    "UpdateSchedule",
    "evaluate_policy",
    "load_checkpoint",
    "make_crossq_optimizers",
    "make_env",
    "make_replay_buffer",
    "save_checkpoint",
]

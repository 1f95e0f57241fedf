"""CrossQ for TorchRL: Batch Renormalization, joint-batch critic, no target networks."""

from crossq_trl.modules import (
    BatchRenorm1d,
    BatchRenormConfig,
    EnsembleQNet,
    make_crossq_actor,
    make_crossq_critic,
    training_mode,
)
from crossq_trl.objectives import CrossQLoss

__all__ = [
    "BatchRenorm1d",
    "BatchRenormConfig",
    "CrossQLoss",
    "EnsembleQNet",
    "make_crossq_actor",
    "make_crossq_critic",
    "training_mode",
]
__version__ = "0.1.0"

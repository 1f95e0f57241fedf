"""Losses."""

from crossq_trl.objectives.categorical import categorical_td_target
from crossq_trl.objectives.crossq_loss import CrossQLoss
from crossq_trl.objectives.return_normalizer import ReturnNormalizer

__all__ = ["CrossQLoss", "ReturnNormalizer", "categorical_td_target"]

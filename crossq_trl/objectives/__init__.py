"""Losses."""

from crossq_trl.objectives.crossq_loss import CrossQLoss

__all__ = ["CrossQLoss"]

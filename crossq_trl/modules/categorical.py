"""The support of a categorical (distributional) critic, as XQC defines it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CategoricalSupport:
    """``num_bins`` evenly spaced atoms from ``v_min`` to ``v_max``: a categorical critic outputs one logit per
    atom, and its Q-value is the expectation ``sum_j softmax(logits)_j * atom_j``.

    XQC's defaults (danielpalenicek/xqc ``conf/agent/base_agent.yaml``: ``min_v: -5``, ``max_v: 5``;
    ``xqc_learner.py``: 101 outputs for ``critic_loss: categorical``), with rewards normalized so that the
    returns fit in the support (:class:`~crossq_trl.objectives.ReturnNormalizer`).
    """

    v_min: float = -5.0
    v_max: float = 5.0
    num_bins: int = 101

    def __post_init__(self) -> None:
        if not self.v_max > self.v_min:
            raise ValueError(f"CategoricalSupport needs v_max > v_min, got v_min={self.v_min}, v_max={self.v_max}.")
        if not (isinstance(self.num_bins, int) and self.num_bins >= 2):
            raise ValueError(f"CategoricalSupport needs num_bins >= 2, got {self.num_bins!r}.")

    def atoms(self, device: torch.device | str | None = None) -> Tensor:
        return torch.linspace(self.v_min, self.v_max, self.num_bins, device=device)

"""The target distribution of a categorical critic's cross-entropy loss."""

from __future__ import annotations

import torch
from torch import Tensor


def categorical_td_target(next_probs: Tensor, target_atoms: Tensor, atoms: Tensor) -> Tensor:
    """Project the distribution that puts ``next_probs[..., j]`` on ``target_atoms[..., j]`` onto ``atoms``.

    ``target_atoms`` are the bootstrapped atoms ``r + gamma^k (1 - terminated) (z_j - alpha log pi(a'|s'))``.
    Each is clipped to ``[atoms[0], atoms[-1]]`` and its mass split between the two nearest atoms in
    proportion to its distance to them (C51's projection; ``categorical_td_loss`` in danielpalenicek/xqc
    ``xqc/agents/xqc/critic.py``). Written as a triangular kernel ``max(0, 1 - |b_j - i|)`` instead of their
    one-hot scatter: the same numbers, and a reduction that compiles into one kernel.
    Shapes: ``next_probs`` and ``target_atoms`` ``[..., J]``, ``atoms`` ``[I]``; returns ``[..., I]``.
    """
    num_atoms = atoms.shape[-1]
    spacing = (atoms[-1] - atoms[0]) / (num_atoms - 1)
    position = ((target_atoms - atoms[0]) / spacing).clamp(0, num_atoms - 1)  # b_j, in units of atoms
    index = torch.arange(num_atoms, device=atoms.device, dtype=position.dtype)
    weights = (1 - (position.unsqueeze(-1) - index).abs()).clamp_min(0)  # [..., J, I]
    return (next_probs.unsqueeze(-1) * weights).sum(-2)

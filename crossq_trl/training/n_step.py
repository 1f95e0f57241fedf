"""n-step transitions gathered at sampling time from the stored one-step transitions (sb3's NStepReplayBuffer).

Computed when sampling rather than when collecting (TorchRL's ``MultiStep`` postproc): the replay buffer keeps
plain one-step transitions, written as soon as they are collected, so its checkpoints and exact resumption are
those of the one-step buffer, ``n_steps`` can change between runs on the same data, and ``n_steps=1`` samples
exactly what it always did. The batch carries the same entries as ``MultiStep``'s (the discounted reward sum,
the ``"next"`` entries of the last step and ``steps_to_next_obs``), which TorchRL's value estimators and
:class:`~crossq_trl.CrossQLoss` turn into a ``gamma ** steps_to_next_obs`` bootstrap.
"""

from __future__ import annotations

import torch
from torch import Tensor

STEPS_KEY = "steps_to_next_obs"


def n_step_entries(
    entries: dict,
    index: Tensor,
    *,
    n_steps: int,
    gamma: float,
    stride: int,
    newest: int,
    capacity: int,
) -> dict:
    """The n-step transitions starting at the slots ``index`` of a round-robin storage's ``entries``.

    The storage holds the transitions in time order, ``stride`` (the number of envs) per env step, so step ``k``
    of the same env lies ``k * stride`` slots on (modulo ``capacity``); ``newest`` is the slot written last, and
    the window never reaches past it. The window stops at the first ``("next", "done")`` (termination or
    truncation, included) or after ``n_steps`` steps: the reward is ``sum_k gamma^k r_k`` over it, the ``"next"``
    entries are those of its last step (so ``("next", "terminated")`` decides the bootstrap and a truncation
    keeps it), and ``steps_to_next_obs`` is its length.
    """
    offsets = torch.arange(n_steps) * stride
    window = (index.unsqueeze(-1) + offsets) % capacity  # [batch, n_steps]
    written = offsets <= ((newest - index) % capacity).unsqueeze(-1)  # not past the newest transition
    done = entries[("next", "done")][window].reshape(window.shape)
    ended_before = (done.cumsum(-1) - done.long()) > 0  # an episode end before this step
    included = written & ~ended_before  # a prefix of the window, never empty
    length = included.sum(-1)
    last = window.gather(-1, (length - 1).unsqueeze(-1)).squeeze(-1)

    batch = {key: entry[last] if _is_next(key) else entry[index] for key, entry in entries.items()}
    rewards = entries[("next", "reward")][window]  # [batch, n_steps, *reward_shape]
    feature_dims = [1] * (rewards.ndim - 2)
    discounts = (gamma ** torch.arange(n_steps, dtype=torch.float64)).to(rewards.dtype).view(n_steps, *feature_dims)
    # where, not a product with the mask: the slots past the newest transition of a buffer not yet full were never
    # written and may hold NaN or inf, which a zero weight would turn into NaN
    discounted = torch.where(included.view(*included.shape, *feature_dims), rewards * discounts, 0.0)
    batch[("next", "reward")] = discounted.sum(1)
    batch[STEPS_KEY] = length.view(-1, *[1] * (batch[("next", "reward")].ndim - 1))
    return batch


def _is_next(key) -> bool:
    return isinstance(key, tuple) and key[0] == "next"

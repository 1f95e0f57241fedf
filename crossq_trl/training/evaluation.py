"""Deterministic evaluation of a policy over whole episodes."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from crossq_trl.modules.modes import training_mode


@torch.no_grad()
def evaluate_policy(
    env: EnvBase,
    policy: TensorDictModuleBase,
    n_episodes: int = 10,
    *,
    deterministic: bool = True,
    max_steps: int = 100_000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``n_episodes`` full episodes; returns ``(returns, lengths)``, one entry per episode.

    The policy acts in eval mode (Batch Renormalization on running statistics) and, when
    ``deterministic``, takes the mode of its distribution (the squashed mean).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}.")
    if env.batch_size.numel() != 1:
        raise ValueError(f"Evaluation needs a single (unbatched) env, got batch size {tuple(env.batch_size)}.")
    exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    returns, lengths = [], []
    with set_exploration_type(exploration), training_mode(policy, False):
        for _ in range(n_episodes):
            rollout = env.rollout(max_steps, policy, break_when_any_done=True)
            returns.append(rollout.get(("next", "reward")).sum())
            lengths.append(rollout.numel())
    return torch.stack(returns).float(), torch.tensor(lengths)

"""Presets for the newer CrossQ variants, taken from the authors' configs.

Sources, all in danielpalenicek/xqc (the XQC paper's code, ICLR 2026, arXiv 2509.25174, which also
ships the CrossQ + WN agent of Palenicek et al. 2025, arXiv 2502.07523):
``conf/config.yaml`` (batch 256, ``updates_per_step: 2``, ``start_training: 5_000``),
``conf/agent/base_agent.yaml`` (learning rates 3e-4 decayed linearly to ``lr_end: 3e-5`` over the run,
``policy_delay: 3``, ``init_temperature: 0.01``, support ``[-5, 5]``),
``conf/agent/crossq_wn.yaml`` and ``conf/agent/xqc.yaml`` (widths, weight norm, weight decay, loss,
reward normalization, block order), ``xqc/agents/xqc/xqc_learner.py`` (target entropy ``-dim(A) / 2``,
101 bins, optax AdamW with its default betas ``(0.9, 0.999)``), ``xqc/networks/mlp.py`` (flax
``BatchNorm``, momentum 0.99 = our 0.01, eps 1e-3: plain batch norm, no renormalization) and
``xqc/utils.py`` (``get_discount``: 0.995 for 1000-step episodes, the MuJoCo tasks).

What differs, on purpose or not yet:
- the authors' code keeps a Polyak target critic (``tau: 0.005``) next to the joint ``[s, s']`` pass;
  these presets keep CrossQ's design of no target network;
- ``weight_decay: 0.01`` of CrossQ + WN is masked there to the batch-norm parameters and the output
  layers; here AdamW decays every actor and critic parameter: on the weight-normalized layers the decay
  is undone by the projection that follows, up to a relative ``lr * weight_decay`` (3e-6) in step size;
- their temperature loss is ``alpha * (entropy - target)`` and their log-std is clipped to ``[-10, 2]``;
  here SAC's ``log_alpha`` loss and ``[-20, 2]``;
- the discount: 0.995 is their heuristic's value for 1000-step episodes; pass ``gamma`` for other tasks.
"""

from __future__ import annotations

from typing import Any

_XQC_REPO_COMMON: dict[str, Any] = {
    "learning_rate": "lin_3e-4_3e-5",
    "learning_starts": 5_000,
    "gradient_steps": 2,
    "gamma": 0.995,
    "ent_coef": "auto_0.01",
    "target_entropy": "auto_0.5",
    "batch_renorm": False,
}

VARIANTS: dict[str, dict[str, Any]] = {
    # Bhatt, Palenicek et al., ICLR 2024: this library's defaults (sb3-contrib's CrossQ).
    "crossq": {},
    # CrossQ + WN: conf/agent/crossq_wn.yaml.
    "crossq_wn": {
        **_XQC_REPO_COMMON,
        "net_arch": {"pi": [256, 256], "qf": [512, 512]},
        "weight_norm": True,
        "optimizer_class": "adamw",
        "optimizer_kwargs": {"betas": (0.9, 0.999), "weight_decay": 0.01},
    },
    # XQC: conf/agent/xqc.yaml (and base_agent.yaml's widths).
    "xqc": {
        **_XQC_REPO_COMMON,
        "net_arch": {"pi": [256, 256, 256, 256], "qf": [512, 512, 512, 512]},
        "weight_norm": True,
        "weight_norm_head": True,
        "pre_activation_norm": True,
        "critic_loss": "categorical",
        "categorical_support": (-5.0, 5.0, 101),
        "reward_normalization": True,
        "optimizer_kwargs": {"betas": (0.9, 0.999)},
    },
}


def variant_values(name: str) -> dict[str, Any]:
    """The hyperparameters of variant ``name``; a ``ValueError`` names the known ones."""
    if name not in VARIANTS:
        raise ValueError(f"CrossQConfig.variant must be one of {sorted(VARIANTS)}, got {name!r}.")
    return VARIANTS[name]

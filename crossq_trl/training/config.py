"""Every CrossQ hyperparameter in one validated dataclass, with the seed's defaults."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import MISSING, InitVar, asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from crossq_trl.exploration.factory import NOISE_FORMS, is_action_noise_option
from crossq_trl.modules.categorical import CategoricalSupport
from crossq_trl.modules.gsde import unused_sde_options
from crossq_trl.training.precision import PRECISIONS
from crossq_trl.training.variants import variant_values

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
DEFAULT_ACTOR_ARCH = (256, 256)
DEFAULT_CRITIC_ARCH = (1024, 1024)


@dataclass
class CrossQConfig:
    """Hyperparameters of CrossQ; names and defaults follow sb3-contrib's ``CrossQ`` and
    ``CrossQPolicy``. Invalid values raise ``ValueError`` at construction.

    ``learning_rate`` is a float, a callable of the remaining progress (1 -> 0),
    ``"lin_<lr>"`` for a linear decay to 0 or ``"lin_<start>_<end>"`` for one to ``end``.
    ``train_freq`` is a step count or ``(n, "step" | "episode")``; ``gradient_steps=-1`` does as many
    updates as env steps collected. ``ent_coef`` is ``"auto"``, ``"auto_<init>"`` or a fixed float.
    ``n_steps`` > 1 gives n-step targets (sb3's ``n_steps``: up to n discounted rewards, cut at the episode's end,
    bootstrapped with ``gamma^k``). ``net_arch`` is one list for both networks or ``{"pi": [...], "qf": [...]}``
    (default actor [256, 256], critic [1024, 1024]).

    Variants: ``variant`` ``"crossq"`` (default), ``"crossq_wn"`` or ``"xqc"`` gives every field left at its
    default the preset's value (:mod:`crossq_trl.training.variants`, with the sources); a field set to
    another value wins, and so does one named in ``explicit_fields`` (the facade and the CLI name every argument
    their caller passed, so ``CrossQ(variant="xqc", gradient_steps=1)`` updates once per env step).
    Their parts are options of their own: ``batch_renorm=False`` (plain batch norm),
    ``pre_activation_norm`` (``Linear -> BN -> act`` blocks), ``weight_norm`` / ``weight_norm_head`` (hidden
    layers / output heads kept at unit norm per output unit), ``critic_loss`` ``"mse"`` or ``"categorical"``
    with ``categorical_support = (v_min, v_max, num_bins)``, ``reward_normalization`` (rewards scaled by the
    running std of the discounted return) and ``target_entropy="auto_<scale>"`` (``-scale * dim(A)``).

    Exploration: ``action_noise`` is None, ``"normal_<sigma>"``, ``"ou_<sigma>"``, an
    :class:`~crossq_trl.exploration.ActionNoise` or any object with sb3's ``ActionNoise`` protocol.
    ``use_sde`` selects the gSDE actor (``log_std_init``, ``use_expln``, ``clip_mean`` are its
    ``policy_kwargs`` in sb3), ``sde_sample_freq`` its resampling period (-1: each rollout only),
    ``use_sde_at_warmup`` acts with it instead of uniform random actions before ``learning_starts``.

    Replay: ``optimize_memory_usage`` stores each observation once (sb3's option); ``prioritized_replay``
    samples with TorchRL's prioritized sampler (``prioritized_replay_alpha``, ``prioritized_replay_beta``: the
    priority and importance-sampling exponents of Schaul et al. 2016) and weighs the critic loss.
    Distributed collection (:mod:`crossq_trl.distributed`): ``collector_workers`` > 0 steps that many envs in
    remote workers, one env each, on a Ray cluster (``collector_backend="ray"``, ``ray_address``; None: a local Ray)
    or in local processes (``"multiprocess"``), the learner staying here; the workers count as envs for
    ``train_freq`` and ``gradient_steps`` (each batch: ``train_freq`` steps of every worker), and get the actor's
    weights every ``weight_sync_interval`` updates.
    Features extractor (sb3's ``policy_kwargs``): ``features_extractor_class`` (None: the observation vector as
    it is, or for a Dict observation :class:`~crossq_trl.modules.features.FlattenExtractor`) is built as
    ``cls(observation_spec, **features_extractor_kwargs)``; ``share_features_extractor`` gives the critic the
    actor's extractor (trained by the actor loss only, as in sb3) instead of one of its own. ``normalize_images``
    is accepted and passed to the default extractor, which does not treat images apart.
    """

    learning_rate: float | str | Callable[[float], float] = 1e-3
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    gamma: float = 0.99
    n_steps: int = 1
    train_freq: int | tuple[int, str] = 1
    gradient_steps: int = 1
    ent_coef: str | float = "auto"
    target_entropy: str | float = "auto"
    policy_delay: int = 3
    action_noise: Any = None
    use_sde: bool = False
    sde_sample_freq: int = -1
    use_sde_at_warmup: bool = False
    log_std_init: float = -3.0
    use_expln: bool = False
    clip_mean: float = 2.0
    n_envs: int = 1
    net_arch: list[int] | dict[str, list[int]] | None = None
    activation_fn: str | type[nn.Module] = "relu"
    batch_norm: bool = True
    batch_norm_momentum: float = 0.01
    batch_norm_eps: float = 1e-3
    renorm_warmup_steps: int = 100_000
    n_critics: int = 2
    optimizer_class: str | type[torch.optim.Optimizer] = "adam"
    optimizer_kwargs: dict[str, Any] | None = None
    features_extractor_class: type[nn.Module] | None = None
    features_extractor_kwargs: dict[str, Any] | None = None
    share_features_extractor: bool = False
    normalize_images: bool = True
    seed: int | None = None
    device: str = "auto"
    compile: bool = True
    precision: str = "float32"
    stats_window_size: int = 100
    replay_buffer_storage: str = "memory"
    replay_buffer_dir: str | None = None
    optimize_memory_usage: bool = False
    prioritized_replay: bool = False
    prioritized_replay_alpha: float = 0.6
    prioritized_replay_beta: float = 0.4
    eval_freq: int = 0
    n_eval_episodes: int = 10
    variant: str = "crossq"
    batch_renorm: bool = True
    pre_activation_norm: bool = False
    weight_norm: bool = False
    weight_norm_head: bool = False
    critic_loss: str = "mse"
    categorical_support: tuple[float, float, int] = (-5.0, 5.0, 101)
    reward_normalization: bool = False
    collector_workers: int = 0
    collector_backend: str = "ray"
    ray_address: str | None = None
    weight_sync_interval: int = 1
    her_kwargs: dict[str, Any] | None = None
    explicit_fields: InitVar[Collection[str]] = ()

    def __post_init__(self, explicit_fields: Collection[str]) -> None:
        self._apply_variant(explicit_fields)
        self.train_freq = self._parse_train_freq(self.train_freq)
        positive = ("buffer_size", "batch_size", "n_steps", "policy_delay", "n_envs", "n_critics", "n_eval_episodes")
        for name in positive:
            _check(name, getattr(self, name), "an integer >= 1", lambda v: _is_int(v) and v >= 1)
        non_negative = ("learning_starts", "renorm_warmup_steps", "eval_freq", "stats_window_size")
        for name in non_negative:
            _check(name, getattr(self, name), "an integer >= 0", lambda v: _is_int(v) and v >= 0)
        _check("gamma", self.gamma, "a float in [0, 1]", lambda v: 0.0 <= v <= 1.0)
        _check(
            "gradient_steps",
            self.gradient_steps,
            "-1 or an integer >= 1",
            lambda v: _is_int(v) and (v == -1 or v >= 1),
        )
        _check("batch_norm_momentum", self.batch_norm_momentum, "a float in (0, 1]", lambda v: 0.0 < v <= 1.0)
        _check("batch_norm_eps", self.batch_norm_eps, "a float > 0", lambda v: v > 0.0)
        _check("precision", self.precision, f"one of {PRECISIONS}", lambda v: v in PRECISIONS)
        _check(
            "replay_buffer_storage",
            self.replay_buffer_storage,
            "'memory' or 'memmap'",
            lambda v: v in ("memory", "memmap"),
        )
        self._check_exploration()
        for name in ("prioritized_replay_alpha", "prioritized_replay_beta"):
            _check(name, getattr(self, name), "a float >= 0", lambda v: _is_number(v) and v >= 0)
        self._check_distributed()
        self.learning_rate_at(1.0)
        self.entropy_coefficient()
        self.target_entropy_scale()
        _check("critic_loss", self.critic_loss, "'mse' or 'categorical'", lambda v: v in ("mse", "categorical"))
        self.support()
        self.actor_arch(), self.critic_arch(), self.activation(), self.optimizer()
        self._check_features_extractor()
        _check("her_kwargs", self.her_kwargs, "None (no HER) or a dict", lambda v: v is None or isinstance(v, dict))
        self.torch_device()

    def _apply_variant(self, explicit_fields: Collection[str]) -> None:
        """Give the fields still at their defaults, and not set explicitly, the values of ``variant``
        (:mod:`crossq_trl.training.variants`)."""
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        unknown = set(explicit_fields) - set(defaults)
        if unknown:
            raise ValueError(f"CrossQConfig explicit_fields {sorted(unknown)} are not fields.")
        for name, value in variant_values(self.variant).items():
            at_default = getattr(self, name) == defaults[name] or (
                name == "optimizer_kwargs" and not self.optimizer_kwargs
            )
            if at_default and name not in explicit_fields:
                setattr(self, name, value)

    def target_entropy_scale(self) -> float | None:
        """For ``"auto"`` (1) and ``"auto_<scale>"``: the target entropy is ``-scale * dim(A)``; None for a float."""
        value = self.target_entropy
        if isinstance(value, str):
            scale = 1.0 if value == "auto" else _to_float(value[5:]) if value.startswith("auto_") else None
            _check("target_entropy", value, "'auto', 'auto_<scale>' or a float", lambda v: scale is not None)
            return scale
        _check("target_entropy", value, "'auto', 'auto_<scale>' or a float", _is_number)
        return None

    def support(self) -> CategoricalSupport:
        """The categorical critic's support from ``categorical_support = (v_min, v_max, num_bins)``."""
        try:
            return CategoricalSupport(*self.categorical_support)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"CrossQConfig.categorical_support must be (v_min, v_max, num_bins) with v_max > v_min and "
                f"num_bins >= 2, got {self.categorical_support!r}."
            ) from err

    def _check_features_extractor(self) -> None:
        _check(
            "features_extractor_class",
            self.features_extractor_class,
            "None or an nn.Module class built as cls(observation_spec, **features_extractor_kwargs)",
            lambda v: v is None or (isinstance(v, type) and issubclass(v, nn.Module)),
        )
        kwargs = self.features_extractor_kwargs
        _check("features_extractor_kwargs", kwargs, "None or a dict", lambda v: v is None or isinstance(v, dict))

    def _check_exploration(self) -> None:
        _check("action_noise", self.action_noise, NOISE_FORMS, is_action_noise_option)
        _check(
            "sde_sample_freq",
            self.sde_sample_freq,
            "-1 (each rollout only) or an integer >= 1",
            lambda v: _is_int(v) and (v == -1 or v >= 1),
        )
        _check("log_std_init", self.log_std_init, "a float", _is_number)
        _check("clip_mean", self.clip_mean, "a float >= 0 (0: no clipping)", lambda v: _is_number(v) and v >= 0)
        unused = unused_sde_options(
            self.use_sde,
            log_std_init=self.log_std_init,
            use_expln=self.use_expln,
            clip_mean=self.clip_mean,
            sde_sample_freq=self.sde_sample_freq,
        ) + (["use_sde_at_warmup"] if self.use_sde_at_warmup and not self.use_sde else [])
        if unused:
            names = ", ".join(f"CrossQConfig.{name}" for name in unused)
            raise ValueError(f"{names} only apply with use_sde=True: set it, or leave them at their defaults.")

    def _check_distributed(self) -> None:
        _check(
            "collector_workers",
            self.collector_workers,
            "an integer >= 0 (0: collect here)",
            lambda v: _is_int(v) and v >= 0,
        )
        _check("weight_sync_interval", self.weight_sync_interval, "an integer >= 1", lambda v: _is_int(v) and v >= 1)
        _check(
            "collector_backend",
            self.collector_backend,
            "'ray' or 'multiprocess'",
            lambda v: v in ("ray", "multiprocess"),
        )
        if self.ray_address is not None and (self.collector_workers == 0 or self.collector_backend != "ray"):
            raise ValueError("CrossQConfig.ray_address needs collector_workers >= 1 and collector_backend='ray'.")
        if self.collector_workers == 0:
            return
        used = {"n_envs > 1": self.n_envs > 1, "action_noise": self.action_noise is not None, "use_sde": self.use_sde}
        if any(used.values()):
            names = ", ".join(name for name, on in used.items() if on)
            raise ValueError(
                f"CrossQConfig.collector_workers > 0 does not support {names} yet: each worker steps one env with the "
                "actor's own Gaussian noise. Use more collector_workers instead of n_envs, or collector_workers=0."
            )

    @staticmethod
    def _parse_train_freq(train_freq) -> tuple[int, str]:
        if isinstance(train_freq, int):
            train_freq = (train_freq, "step")
        train_freq = tuple(train_freq)
        ok = len(train_freq) == 2 and _is_int(train_freq[0]) and train_freq[0] >= 1
        _check(
            "train_freq",
            train_freq,
            "an integer >= 1 or (n >= 1, 'step' | 'episode')",
            lambda v: ok and v[1] in ("step", "episode"),
        )
        return train_freq

    def learning_rate_at(self, progress_remaining: float) -> float:
        """The learning rate when ``progress_remaining`` (1 at the start, 0 at the end) is left."""
        lr = self.learning_rate
        if isinstance(lr, str):
            ends = [_to_float(part) for part in lr[4:].split("_")] if lr.startswith("lin_") else []
            if len(ends) not in (1, 2) or not all(_is_number(end) for end in ends):
                raise ValueError(
                    "CrossQConfig.learning_rate: expected a float, a callable, 'lin_<lr>' or 'lin_<start>_<end>', "
                    f"got {lr!r}."
                )
            start, end = ends if len(ends) == 2 else (ends[0], 0.0)
            lr = end + (start - end) * progress_remaining
        elif callable(lr):
            lr = lr(progress_remaining)
        _check("learning_rate", lr, "a float >= 0 (or a schedule returning one)", lambda v: _is_number(v) and v >= 0)
        return float(lr)

    def entropy_coefficient(self) -> tuple[float, bool]:
        """``(alpha_init, fixed_alpha)`` from ``ent_coef``."""
        ent_coef = self.ent_coef
        if isinstance(ent_coef, str):
            init = 1.0 if ent_coef == "auto" else _to_float(ent_coef[5:]) if ent_coef.startswith("auto_") else None
            _check(
                "ent_coef",
                ent_coef,
                "'auto', 'auto_<init > 0>' or a float > 0",
                lambda v: init is not None and init > 0,
            )
            return float(init), False
        _check("ent_coef", ent_coef, "'auto', 'auto_<init > 0>' or a float > 0", lambda v: _is_number(v) and v > 0)
        return float(ent_coef), True

    def _arch(self, key: str, default: tuple[int, ...]) -> list[int]:
        arch = self.net_arch
        if arch is None:
            arch = list(default)
        elif isinstance(arch, dict):
            unknown = set(arch) - {"pi", "qf"}
            _check("net_arch", arch, "a list of sizes or a dict with keys 'pi' and 'qf'", lambda v: not unknown)
            arch = list(arch.get(key, default))
        _check(
            "net_arch",
            arch,
            "non-empty lists of layer sizes >= 1",
            lambda v: len(v) > 0 and all(_is_int(h) and h >= 1 for h in v),
        )
        return list(arch)

    def actor_arch(self) -> list[int]:
        return self._arch("pi", DEFAULT_ACTOR_ARCH)

    def critic_arch(self) -> list[int]:
        return self._arch("qf", DEFAULT_CRITIC_ARCH)

    def activation(self) -> type[nn.Module]:
        return _lookup("activation_fn", self.activation_fn, ACTIVATIONS)

    def optimizer(self) -> type[torch.optim.Optimizer]:
        return _lookup("optimizer_class", self.optimizer_class, OPTIMIZERS)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"CrossQConfig.device: expected 'auto', 'cpu', 'cuda', ..., got {self.device!r}.") from err

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (classes and schedules by name) for checkpoints and logs."""
        out = asdict(self)
        for name in ("activation_fn", "optimizer_class"):
            if isinstance(out[name], type):
                out[name] = out[name].__name__.lower()
        if callable(out["learning_rate"]):
            out["learning_rate"] = self.learning_rate_at(1.0)
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check(name: str, value, allowed: str, predicate) -> None:
    try:
        ok = bool(predicate(value))
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"CrossQConfig.{name} must be {allowed}, got {value!r}.")


def _lookup(name: str, value, table: dict[str, type]) -> type:
    if isinstance(value, type):
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ValueError(f"CrossQConfig.{name} must be a class or one of {sorted(table)}, got {value!r}.")

"""``CrossQ``: the one-line API of sb3-contrib's CrossQ, on TorchRL parts."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import Logger, get_logger

from crossq_trl.compat import CrossQPolicy, env_as_given, is_vector_env, to_torchrl_env
from crossq_trl.distributed import PolicyWeightPush, make_distributed_collector
from crossq_trl.exploration.additive_noise import AdditiveActionNoise
from crossq_trl.exploration.factory import make_action_noise
from crossq_trl.modules.acting import ActingPolicy
from crossq_trl.modules.actor import make_crossq_actor
from crossq_trl.modules.critic import make_crossq_critic
from crossq_trl.modules.features import FlattenExtractor, make_features_extractor
from crossq_trl.modules.mlp import BatchRenormConfig
from crossq_trl.modules.specs import observation_keys
from crossq_trl.objectives.crossq_loss import CrossQLoss
from crossq_trl.objectives.return_normalizer import ReturnNormalizer
from crossq_trl.replay import TensorPrioritizedSampler, build_replay_buffer
from crossq_trl.replay.her import HerReplayBuffer, her_options, is_her_buffer_class
from crossq_trl.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from crossq_trl.training.collector import CrossQCollector
from crossq_trl.training.config import CrossQConfig
from crossq_trl.training.env_state import snapshot_env
from crossq_trl.training.envs import EnvLike, goal_compute_reward, make_env
from crossq_trl.training.replay_buffer import load_replay_buffer_state, replay_buffer_state
from crossq_trl.training.trainer import CrossQTrainer
from crossq_trl.training.update import CrossQUpdate, make_crossq_optimizers

RANDOM_PHASE_CHUNK = 1000  # env steps per collected batch before learning_starts (no update waits on them)
POLICY_KWARGS = (
    "net_arch",
    "activation_fn",
    "batch_norm",
    "batch_norm_momentum",
    "log_std_init",
    "use_expln",
    "clip_mean",
    "batch_norm_eps",
    "renorm_warmup_steps",
    "n_critics",
    "optimizer_class",
    "optimizer_kwargs",
    "batch_renorm",
    "pre_activation_norm",
    "weight_norm",
    "weight_norm_head",
    "features_extractor_class",
    "features_extractor_kwargs",
    "share_features_extractor",
    "normalize_images",
)


def _recording_passed_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """``__init__`` that first stores the names of the arguments its caller passed in ``self._passed_arguments``:
    a variant's preset must not override an argument passed with its default value (``gradient_steps=1``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        self._passed_arguments = set(signature.bind(self, *args, **kwargs).arguments)
        init(self, *args, **kwargs)

    return wrapper


class CrossQ:
    """CrossQ with the API of ``sb3_contrib.CrossQ`` (``learn``, ``predict``, ``save``,
    ``load``, ...), built from TorchRL components that stay reachable: ``actor``,
    ``critic``, ``loss_module``, ``update``, ``replay_buffer``, ``collector`` and
    ``trainer`` (the last two from the latest :meth:`learn`).

    ``env`` is a gymnasium id, a gymnasium env (or factory), a TorchRL env, an sb3 ``VecEnv`` or a gymnasium
    ``VectorEnv`` (:mod:`crossq_trl.compat`; ``model.policy`` is sb3's policy surface, see there). Every
    hyperparameter of :class:`~crossq_trl.CrossQConfig` is a keyword; the network options
    can also come through ``policy_kwargs`` as in sb3. Extra keywords: ``n_envs``
    (parallel envs), ``compile`` (compiled update, default on), ``eval_env``,
    ``eval_freq``, ``n_eval_episodes``, ``logger`` (``"csv"``, ``"tensorboard"``,
    ``"wandb"`` or a TorchRL ``Logger``; ``tensorboard_log=DIR`` selects TensorBoard) and
    ``log_dir``.

    Exploration as in sb3: ``action_noise`` (an sb3 ``ActionNoise`` or any object with its protocol,
    an :class:`~crossq_trl.exploration.ActionNoise`, or ``"normal_<sigma>"`` / ``"ou_<sigma>"``) is added
    to the policy's action scaled to [-1, 1] and clipped, its process restarting at each episode start;
    ``use_sde`` (with ``sde_sample_freq``, ``use_sde_at_warmup`` and the ``policy_kwargs``
    ``log_std_init``, ``use_expln``, ``clip_mean``) gives the actor a gSDE head. Uniform random actions
    before ``learning_starts`` get no action noise (sb3 adds it to them too).

    ``variant="crossq_wn"`` (CrossQ + WN) or ``"xqc"`` (XQC) sets the hyperparameters of the authors' configs for
    every argument left at its default (:mod:`crossq_trl.training.variants` lists them with their sources).
    ``collector_workers=N`` collects with N remote workers, one env each, on a Ray cluster (``ray_address``) or in
    local processes (``collector_backend="multiprocess"``), pushing the actor's weights to them every
    ``weight_sync_interval`` updates (:mod:`crossq_trl.distributed`); the workers count as envs for ``train_freq``.

    ``n_steps`` > 1 trains on n-step targets as sb3 2.x does: the replay buffer keeps one-step transitions and
    samples n-step ones (:mod:`crossq_trl.training.n_step`).

    Replay (:func:`~crossq_trl.replay.build_replay_buffer`): ``replay_buffer_class`` is a TorchRL ``Sampler`` class
    (e.g. ``PrioritizedSampler``) or ``TensorDictReplayBuffer`` subclass (e.g. ``TensorDictPrioritizedReplayBuffer``),
    built with ``replay_buffer_kwargs`` (e.g. ``alpha``, ``beta``); ``prioritized_replay=True`` is the shorthand.
    With a prioritized sampler the critic loss is weighted by the importance weights and each update writes the
    new priorities back. ``optimize_memory_usage=True`` stores each observation once. ``replay_buffer_kwargs``
    ``storage`` (``"memory"`` / ``"memmap"``) and ``scratch_dir`` choose where the transitions live.
    Dict observations keep their entries as separate keys, read through a features extractor (``policy_kwargs``
    ``features_extractor_class`` / ``features_extractor_kwargs`` / ``share_features_extractor``, default
    :class:`~crossq_trl.modules.features.FlattenExtractor`). ``replay_buffer_class=HerReplayBuffer`` (or ``"her"``,
    or sb3's class) with ``replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future")`` relabels
    goals as sb3's HER does, on a goal env (:mod:`crossq_trl.replay.her`).

    Example:
        >>> model = CrossQ("MlpPolicy", "Pendulum-v1", policy_delay=2, verbose=1)
        >>> model.learn(total_timesteps=20_000)
        >>> action, _ = model.predict(obs, deterministic=True)
        >>> model.save("crossq_pendulum.pt")
    """

    @_recording_passed_arguments
    def __init__(
        self,
        policy: str,
        env: EnvLike | None,
        learning_rate: float | str | Callable[[float], float] = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: Any = None,
        replay_buffer_class: Any = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        policy_delay: int = 3,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str = "auto",
        _init_setup_model: bool = True,
        *,
        eval_env: EnvLike | None = None,
        logger: str | Logger | None = None,
        log_dir: str | None = None,
        **config_kwargs: Any,
    ) -> None:
        if policy not in ("MlpPolicy", "CrossQPolicy", "MultiInputPolicy"):
            raise ValueError(f"Only 'MlpPolicy' / 'MultiInputPolicy' are available (no CnnPolicy), got {policy!r}.")
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        if is_her_buffer_class(replay_buffer_class):
            config_kwargs["her_kwargs"] = her_options(replay_buffer_kwargs)  # storage options stay, as for any buffer
            replay_buffer_class = None
        policy_kwargs = dict(policy_kwargs or {})
        unknown = set(policy_kwargs) - set(POLICY_KWARGS)
        if unknown:
            raise ValueError(f"Unsupported policy_kwargs {sorted(unknown)}; supported: {list(POLICY_KWARGS)}.")
        if "storage" in replay_buffer_kwargs:
            config_kwargs["replay_buffer_storage"] = replay_buffer_kwargs.pop("storage")
        if "scratch_dir" in replay_buffer_kwargs:
            config_kwargs["replay_buffer_dir"] = replay_buffer_kwargs.pop("scratch_dir")
        self.replay_buffer_class, self.replay_buffer_kwargs = replay_buffer_class, replay_buffer_kwargs
        self.config = CrossQConfig(
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            gamma=gamma,
            n_steps=n_steps,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            ent_coef=ent_coef,
            target_entropy=target_entropy,
            policy_delay=policy_delay,
            action_noise=action_noise,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            optimize_memory_usage=optimize_memory_usage,
            stats_window_size=stats_window_size,
            seed=seed,
            device=device,
            **policy_kwargs,
            **config_kwargs,
            explicit_fields={*self._passed_arguments, *policy_kwargs, *config_kwargs} & set(CrossQConfig.field_names()),
        )
        self.verbose = verbose
        self.device = self.config.torch_device()
        self.env_source = env if isinstance(env, (str, type(None))) else None
        self._logger_spec = "tensorboard" if tensorboard_log else logger
        self._log_dir = tensorboard_log or log_dir or "runs"
        self._eval_env_source = eval_env
        self.num_timesteps = 0
        self.collector: CrossQCollector | None = None
        self.trainer: CrossQTrainer | None = None
        self._env_snapshot: dict[str, Any] | None = None
        if seed is not None:
            self.set_random_seed(seed)
        self._compute_reward = None
        self.env = None if env is None else self._make_train_env(env, seed)
        self._env_as_given = None if env is None else env_as_given(env, self.env)  # what get_env() returns
        self._specs = None if self.env is None else self._env_specs(self.env)
        if _init_setup_model:
            self._setup_model()

    # --- construction ----------------------------------------------------------------

    def _make_train_env(self, env: EnvLike, seed: int | None) -> EnvBase:
        """The training env; it marks episode starts (``is_init``) for the action noise to restart on."""
        mark = self.config.action_noise is not None
        if self.config.her_kwargs is not None:  # HER relabels with the goal env's reward function
            self._compute_reward = goal_compute_reward(env)
        if is_vector_env(env):  # an sb3 VecEnv or a gymnasium VectorEnv: n_envs is its num_envs
            if self.config.n_envs not in (1, env.num_envs):
                raise ValueError(f"n_envs={self.config.n_envs}, but the vector env has {env.num_envs}: omit n_envs.")
            return make_env(to_torchrl_env(env, device=self.device), seed=seed, mark_episode_start=mark)
        return make_env(env, n_envs=self.config.n_envs, seed=seed, device=self.device, mark_episode_start=mark)

    @staticmethod
    def _env_specs(env: EnvBase) -> dict[str, Any]:
        return {"observation": env.observation_spec_unbatched.clone(), "action": env.action_spec_unbatched.clone()}

    def _setup_model(self) -> None:
        if self._specs is None:
            raise ValueError("An env (or the specs saved in a model file) is needed to build the networks.")
        cfg = self.config
        n_envs = self._envs_per_step()
        batch_renorm = BatchRenormConfig(
            momentum=cfg.batch_norm_momentum, eps=cfg.batch_norm_eps, warmup_steps=cfg.renorm_warmup_steps
        )
        if not cfg.batch_renorm:  # r and d clipped to (1, 0): plain batch norm
            batch_renorm = replace(batch_renorm, r_max=1.0, d_max=0.0)
        network = {"activation": cfg.activation(), "batch_norm": cfg.batch_norm, "batch_renorm": batch_renorm}
        network.update(pre_activation_norm=cfg.pre_activation_norm, weight_norm=cfg.weight_norm)
        head = {"weight_norm_head": cfg.weight_norm_head}
        specs = {"observation_spec": self._specs["observation"], "action_spec": self._specs["action"]}
        sde = {"log_std_init": cfg.log_std_init, "use_expln": cfg.use_expln, "clip_mean": cfg.clip_mean}
        sde = {"use_sde": True, "sde_sample_freq": cfg.sde_sample_freq, **sde} if cfg.use_sde else {}
        keys = observation_keys(self._specs["observation"])
        specs["in_keys"] = keys
        actor_features, critic_features = self._features_extractors(keys)
        actor_options = {"features_extractor": actor_features, "device": self.device, **network, **head, **sde}
        self.actor = make_crossq_actor(**specs, net_arch=cfg.actor_arch(), **actor_options)
        self.acting_policy = ActingPolicy(self.actor, compile=cfg.compile)
        self.action_noise, self.exploration_policy = None, self.acting_policy
        if cfg.action_noise is not None:
            action_spec = self._specs["action"]
            self.action_noise = make_action_noise(cfg.action_noise, action_dim=action_spec.shape[-1], n_envs=n_envs)
            noise = AdditiveActionNoise(self.action_noise, action_spec, action_key=self.acting_policy.out_keys[0])
            self.exploration_policy = TensorDictSequential(self.acting_policy, noise.to(self.device))
        categorical = cfg.critic_loss == "categorical"
        self.critic = make_crossq_critic(
            **specs,
            n_critics=cfg.n_critics,
            net_arch=cfg.critic_arch(),
            device=self.device,
            categorical=cfg.support() if categorical else None,
            **network,
            **head,
            features_extractor=critic_features,
            share_features_extractor=critic_features is not None and cfg.share_features_extractor,
        )
        alpha_init, fixed_alpha = cfg.entropy_coefficient()
        scale = cfg.target_entropy_scale()
        action_dim = self._specs["action"].shape[-1]
        reward_normalizer = ReturnNormalizer(cfg.gamma, n_envs) if cfg.reward_normalization else None
        self.loss_module = CrossQLoss(
            self.actor,
            self.critic,
            num_qvalue_nets=cfg.n_critics,
            loss_function="categorical" if categorical else "l2",
            alpha_init=alpha_init,
            fixed_alpha=fixed_alpha,
            target_entropy=cfg.target_entropy if scale is None else -scale * action_dim,
            reward_normalizer=None if reward_normalizer is None else reward_normalizer.to(self.device),
        )
        self.policy = CrossQPolicy(self.actor, self.critic, self.predict)  # sb3's model.policy, a view
        self.loss_module.make_value_estimator(gamma=cfg.gamma)
        optimizers = make_crossq_optimizers(
            self.loss_module,
            learning_rate=cfg.learning_rate_at(1.0),
            optimizer_class=cfg.optimizer(),
            optimizer_kwargs=cfg.optimizer_kwargs,
        )
        self.update = CrossQUpdate(
            self.loss_module, optimizers, policy_delay=cfg.policy_delay, compile=cfg.compile, precision=cfg.precision
        )
        replay_buffer_class, replay_buffer_kwargs = self.replay_buffer_class, self.replay_buffer_kwargs
        if cfg.prioritized_replay:
            if replay_buffer_class is not None:
                raise ValueError("Pass either prioritized_replay=True or replay_buffer_class, not both.")
            replay_buffer_class = TensorPrioritizedSampler
            replay_buffer_kwargs = {"alpha": cfg.prioritized_replay_alpha, "beta": cfg.prioritized_replay_beta}
        if cfg.her_kwargs is not None:
            replay_buffer_class, replay_buffer_kwargs = HerReplayBuffer, self._her_options(keys)
        self.replay_buffer = build_replay_buffer(
            replay_buffer_class,
            replay_buffer_kwargs,
            buffer_size=cfg.buffer_size,
            batch_size=cfg.batch_size,
            storage=cfg.replay_buffer_storage,
            scratch_dir=cfg.replay_buffer_dir,
            optimize_memory_usage=cfg.optimize_memory_usage,
            n_steps=cfg.n_steps,
            gamma=cfg.gamma,
            n_envs=n_envs,
            priority_key=self.loss_module.tensor_keys.priority,
        )

    def _envs_per_step(self) -> int:
        """Envs stepped per collected time step: the remote workers, the (parallel) train env, or ``n_envs``."""
        if self.config.collector_workers > 0:
            return self.config.collector_workers
        return self.config.n_envs if self.env is None else self.env.batch_size.numel()

    def _make_distributed_collector(self, frames_per_batch: int, total_frames: int, init_random_frames: int):
        """Remote workers, one env each (:mod:`crossq_trl.distributed`), acting with an eager copy of the actor."""
        cfg = self.config
        if not isinstance(self.env_source, str):
            raise ValueError("collector_workers > 0 needs the env given by id: each worker builds its own env.")
        # The workers get a pickled policy: eager (compiled functions do not pickle) and on the CPU. On a CPU
        # learner it shares the actor's tensors; a GPU learner's weights are copied into it before each push.
        actor = self.actor if self.device.type == "cpu" else copy.deepcopy(self.actor).cpu()
        self.worker_policy = ActingPolicy(actor)
        seed = None if cfg.seed is None else cfg.seed + self.num_timesteps  # a resumed run meets new episodes
        return make_distributed_collector(
            self.env_source,
            self.worker_policy,
            backend=cfg.collector_backend,
            num_workers=cfg.collector_workers,
            frames_per_worker=frames_per_batch // cfg.collector_workers,
            total_frames=total_frames,
            init_random_frames=init_random_frames,
            seed=seed,
            ray_address=cfg.ray_address,
        )

    def _features_extractors(self, keys: list) -> tuple[nn.Module | None, nn.Module | None]:
        """The actor's and the critic's features extractors (the same one with ``share_features_extractor``);
        none for a vector observation without ``features_extractor_class``, :class:`FlattenExtractor` for a Dict."""
        cfg, spec = self.config, self._specs["observation"]
        extractor_class = cfg.features_extractor_class
        if extractor_class is None:
            if len(keys) == 1 and spec[keys[0]].ndim == 1:
                return None, None
            extractor_class = FlattenExtractor
        kwargs = dict(cfg.features_extractor_kwargs or {})
        if extractor_class is FlattenExtractor:
            kwargs.setdefault("normalize_images", cfg.normalize_images)
        actor = make_features_extractor(extractor_class, spec, keys, **kwargs)
        if cfg.share_features_extractor:
            return actor, actor
        return actor, make_features_extractor(extractor_class, spec, keys, **kwargs)

    def _her_options(self, keys: list) -> dict[str, Any]:
        """:class:`HerReplayBuffer`'s options (``replay_buffer_class=HerReplayBuffer``), on a goal env only."""
        missing = [key for key in ("observation", "achieved_goal", "desired_goal") if key not in keys]
        if missing:
            raise ValueError(
                f"HerReplayBuffer needs a goal env: a Dict observation with 'observation', 'achieved_goal' and "
                f"'desired_goal'; {missing} are missing (observation keys: {keys})."
            )
        return {"compute_reward": self._compute_reward, **self.config.her_kwargs}

    def _make_logger(self) -> Logger | None:
        spec = self._logger_spec
        if spec is None or isinstance(spec, Logger):
            return spec
        try:
            return get_logger(spec, logger_name=self._log_dir, experiment_name="CrossQ")
        except ImportError as err:
            raise ImportError(f"logger={spec!r} needs its package installed: {err}") from err

    def _make_trainer(
        self,
        total_timesteps: int,
        *,
        callback=None,
        log_interval: int = 4,
        progress_bar: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_interval: int = 50_000,
        save_replay_buffer: bool = True,
        on_checkpoint_error: str = "stop",
    ) -> CrossQTrainer:
        if self.env is None:
            raise ValueError("No env: pass one to CrossQ(...) / CrossQ.load(..., env=...) or call set_env().")
        cfg = self.config
        n_envs = self._envs_per_step()
        frequency, unit = cfg.train_freq
        frames_per_batch = n_envs * (frequency if unit == "step" else 1)
        remaining = -(-total_timesteps // frames_per_batch) * frames_per_batch
        random_frames = max(0, cfg.learning_starts - self.num_timesteps)
        random_frames = -(-random_frames // frames_per_batch) * frames_per_batch
        if cfg.collector_workers > 0:
            self.collector = self._make_distributed_collector(frames_per_batch, remaining, random_frames)
        else:
            self.collector = CrossQCollector(
                self.env,
                self.exploration_policy,
                frames_per_batch=frames_per_batch,
                total_frames=remaining,
                init_random_frames=random_frames,
                exploration_type=ExplorationType.RANDOM,
                device=self.device,
                storing_device="cpu",
                auto_register_policy_transforms=False,
                # a callback sees every step, as in sb3; without one the random phase runs in chunks
                random_frames_per_batch=1 if callback is not None else RANDOM_PHASE_CHUNK,
                random_warmup=not cfg.use_sde_at_warmup,
            )
        eval_env = None
        if cfg.eval_freq > 0:
            source = self._eval_env_source if self._eval_env_source is not None else self.env_source
            if source is None:
                raise ValueError("eval_freq > 0 needs eval_env=... when the training env was not given by id.")
            eval_env = make_env(source, device=self.device, seed=None if cfg.seed is None else cfg.seed + 10_000)
        schedule = cfg.learning_rate_at if isinstance(cfg.learning_rate, str) or callable(cfg.learning_rate) else None
        previous = self.trainer
        trainer = CrossQTrainer(
            collector=self.collector,
            total_frames=self.num_timesteps + remaining,
            update=self.update,
            replay_buffer=self.replay_buffer,
            train_freq=cfg.train_freq,
            gradient_steps=cfg.gradient_steps,
            learning_rate=schedule,
            logger=self._make_logger(),
            log_interval=log_interval,
            verbose=self.verbose,
            progress_bar=progress_bar,
            eval_env=eval_env,
            eval_freq=cfg.eval_freq,
            n_eval_episodes=cfg.n_eval_episodes,
            stats_window_size=cfg.stats_window_size,
            checkpoint_path=checkpoint_path,
            checkpoint_interval=checkpoint_interval,
            save_replay_buffer=save_replay_buffer,
            on_checkpoint_error=on_checkpoint_error,
            learning_starts=cfg.learning_starts,
            callback=None if callback is None else lambda trainer: self._on_step(trainer, callback),
            extra_state=lambda: {
                **self._model_state(),
                "num_timesteps": trainer.collected_frames,
                "total_timesteps": trainer.total_frames,
            },
        )
        if self.action_noise is not None:  # its process state goes into the training checkpoints
            trainer.register_module("action_noise", self.action_noise)
        if self.loss_module.reward_normalizer is not None:  # its statistics follow the collected rewards
            trainer.register_op("batch_process", self.loss_module.reward_normalizer.observe)
        if cfg.collector_workers > 0:
            source = None if self.worker_policy.net is self.actor.module[0].module else self.acting_policy
            self.weight_push = PolicyWeightPush(self.collector, cfg.weight_sync_interval, source=source)
            self.weight_push.register(trainer)
        trainer.collected_frames = self.num_timesteps
        if previous is not None and self.num_timesteps > 0:  # continuing: keep the episode window, like sb3
            trainer.episodes.load_state_dict(previous.episodes.state_dict())
        self.trainer = trainer
        return trainer

    def _on_step(self, trainer: CrossQTrainer, callback: Callable[[CrossQ], bool | None]) -> bool | None:
        self.num_timesteps = trainer.collected_frames
        return callback(self)

    # --- the sb3 API -----------------------------------------------------------------

    def learn(
        self,
        total_timesteps: int,
        callback: Callable[[CrossQ], bool | None] | None = None,
        log_interval: int = 4,
        tb_log_name: str = "CrossQ",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
        *,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_interval: int = 50_000,
        on_checkpoint_error: str = "stop",
    ) -> CrossQ:
        """Train for ``total_timesteps`` env steps. ``callback(model)`` runs after every
        collected batch and stops training by returning False. ``log_interval`` counts
        episodes between reports. With ``checkpoint_path`` the full training state is
        saved every ``checkpoint_interval`` steps and at the end (see :meth:`resume`).

        Faults (see :class:`~crossq_trl.CrossQTrainer`): SIGTERM, SIGUSR1 and Ctrl-C end the
        current step, write the checkpoint and raise :class:`~crossq_trl.TrainingInterrupted`;
        non-finite values raise :class:`~crossq_trl.NonFiniteError` and leave the last checkpoint
        as it was; an env error raises :class:`~crossq_trl.EnvStepError` after a checkpoint of the
        state before it; a failed checkpoint write raises :class:`~crossq_trl.CheckpointSaveError`
        (``on_checkpoint_error="stop"``) or warns and retries at the next interval (``"continue"``)."""
        if total_timesteps < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}.")
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._env_snapshot = None
        trainer = self._make_trainer(
            total_timesteps,
            callback=callback,
            log_interval=log_interval,
            progress_bar=progress_bar,
            checkpoint_path=checkpoint_path,
            checkpoint_interval=checkpoint_interval,
            on_checkpoint_error=on_checkpoint_error,
        )
        if self._env_snapshot is not None:
            trainer.continue_episodes(self._env_snapshot)
        self._train(trainer)
        return self

    def _train(self, trainer: CrossQTrainer) -> None:
        # The snapshot is taken by a shutdown hook, before the collector closes the env.
        trainer.register_op("shutdown", lambda: setattr(self, "_env_snapshot", snapshot_env(trainer.collector)))
        try:
            trainer.train()
        finally:
            self.num_timesteps = trainer.collected_frames

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """Action(s) for one observation ``[obs_dim]`` or a batch ``[n, obs_dim]`` (numpy in, numpy out); for a Dict
        observation a dict of such arrays, one per key."""
        td = self._observation_tensordict(observation)
        exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
        with torch.no_grad(), set_exploration_type(exploration):
            action = self.acting_policy(td).get("action")
        return action.cpu().numpy(), None

    def _observation_tensordict(self, observation: np.ndarray | dict[str, np.ndarray]) -> TensorDict:
        spec = self._specs["observation"]
        keys = observation_keys(spec)
        if not isinstance(observation, dict):
            observation = {keys[0]: observation} if len(keys) == 1 else observation
        if not isinstance(observation, dict) or set(observation) != set(keys):
            given = sorted(observation) if isinstance(observation, dict) else type(observation).__name__
            raise ValueError(f"predict expects a dict of the observation entries {keys}, got {given}.")
        entries, batch_size = {}, None
        for key in keys:
            shape = tuple(spec[key].shape)
            value = torch.as_tensor(np.asarray(observation[key]), dtype=torch.float32, device=self.device)
            batch = tuple(value.shape[: value.dim() - len(shape)])
            if tuple(value.shape[len(batch) :]) != shape or len(batch) > 1 or batch_size not in (None, batch):
                entry = f" for {key!r} (the same n for every entry)" if len(keys) > 1 else ""
                raise ValueError(
                    f"predict expects an observation of shape {shape} or [n, {', '.join(map(str, shape))}]{entry}, "
                    f"got {tuple(value.shape)}."
                )
            entries[key], batch_size = value, batch
        return TensorDict(entries, batch_size=batch_size, device=self.device)

    def get_env(self) -> Any:
        """The training env as it was given: an sb3 VecEnv, a gymnasium VectorEnv or a TorchRL env; for an id or
        a gymnasium env, sb3's VecEnv interface on the TorchRL env (:class:`~crossq_trl.compat.TorchRLVecEnv`)."""
        return self._env_as_given

    def set_env(self, env: EnvLike, force_reset: bool = True) -> None:
        """Train on another env with the same observation and action spaces."""
        new_env = self._make_train_env(env, self.config.seed)
        new_specs = self._env_specs(new_env)
        for name in ("observation", "action"):
            if self._specs is not None and new_specs[name] != self._specs[name]:
                raise ValueError(f"set_env: the new env's {name} spec differs from the model's:\n{new_specs[name]}")
        self.env, self._specs = new_env, new_specs
        if isinstance(getattr(self, "replay_buffer", None), HerReplayBuffer):
            self.replay_buffer.compute_reward = self._compute_reward
        self._env_as_given = env_as_given(env, new_env)
        self.env_source = env if isinstance(env, str) else None
        if force_reset:
            self._env_snapshot = None

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed Python, NumPy, PyTorch and the env."""
        if seed is None:
            return
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if getattr(self, "env", None) is not None:
            self.env.set_seed(seed)

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """State dicts of the networks and the temperature: ``{"actor", "critic", "loss_module"}``."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "loss_module": self.loss_module.state_dict(),
        }

    def set_parameters(
        self, load_path_or_dict: str | os.PathLike | dict[str, dict[str, Any]], exact_match: bool = True, device="auto"
    ) -> None:
        """Load parameters from :meth:`get_parameters` output or from a file written by :meth:`save`."""
        params = load_path_or_dict
        if not isinstance(params, dict):
            params = {"loss_module": load_checkpoint(params, map_location=self.device)["loss_module"]}
            exact_match = False
        known = {"actor", "critic", "loss_module"}
        if set(params) - known:  # as sb3: an unknown name is an error whatever exact_match says
            raise ValueError(f"set_parameters: unknown objects {sorted(set(params) - known)}; known: {sorted(known)}.")
        if exact_match and set(params) != known:
            raise ValueError(f"set_parameters(exact_match=True) needs {sorted(known)}; got {sorted(params)}.")
        if "loss_module" in params:
            self.loss_module.load_state_dict(params["loss_module"], strict=exact_match)
        else:
            for name in ("actor", "critic"):
                if name in params:
                    getattr(self, name).load_state_dict(params[name], strict=exact_match)

    def _model_state(self) -> dict[str, Any]:
        return {
            "config": {**self.config.to_dict(), "env_id": self.env_source},
            "replay_buffer_class": self.replay_buffer_class,  # a class: pickled by reference
            "replay_buffer_kwargs": self.replay_buffer_kwargs,
            "specs": self._specs,
            "num_timesteps": self.num_timesteps,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Save config, networks (with BRN statistics), temperature and optimizer state."""
        state = {"kind": "model", **self._model_state()}
        state.update(loss_module=self.loss_module.state_dict(), update=self.update.state_dict())
        if self.action_noise is not None:
            state["action_noise"] = self.action_noise.state_dict()
        return save_checkpoint(path, state)

    @classmethod
    def _from_state(cls, data: dict[str, Any], env: EnvLike | None, device: str, **kwargs: Any) -> CrossQ:
        config = {name: data.get(name) for name in ("replay_buffer_class", "replay_buffer_kwargs")}
        config.update(data["config"])
        env_id = config.pop("env_id", None)
        config.update(device=device, **kwargs)
        verbose = config.pop("verbose", 0)
        model = cls("MlpPolicy", None, verbose=verbose, **config, _init_setup_model=False)
        model.env_source = env_id
        model._specs = data["specs"]
        if env is not None:
            model.set_env(env)
        model._setup_model()
        model.loss_module.load_state_dict(data["loss_module"])
        if model.action_noise is not None and data.get("action_noise") is not None:
            model.action_noise.load_state_dict(data["action_noise"])
        model.num_timesteps = data["num_timesteps"]
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, env: EnvLike | None = None, device: str = "auto", **kwargs: Any) -> CrossQ:
        """Rebuild a model saved with :meth:`save` (or from a training checkpoint); ``kwargs``
        override saved hyperparameters (e.g. ``learning_starts=0``)."""
        data = load_checkpoint(path, map_location="cpu")
        kind = data.get("kind")
        if kind not in ("model", "training"):
            raise CheckpointError(f"{str(path)!r} holds no CrossQ model (kind={kind!r}).")
        model = cls._from_state(data, env, device, **kwargs)
        model.update.load_state_dict(data["update"] if kind == "model" else data["modules"]["optimization_stepper"])
        return model

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        env: EnvLike | None = None,
        device: str = "auto",
        **learn_kwargs: Any,
    ) -> CrossQ:
        """Continue the run of a training checkpoint (``learn(checkpoint_path=...)``) to its
        ``total_timesteps``: same weights, optimizers, replay buffer, counters, RNG streams
        and, for a single env, the same episode. The checkpoint keeps being updated."""
        data = load_checkpoint(path, map_location="cpu")
        if data.get("kind") != "training":
            raise CheckpointError(f"{str(path)!r} is not a training checkpoint (kind={data.get('kind')!r}).")
        if env is None and data["config"].get("env_id") is None:
            raise ValueError("This checkpoint's env was not given by id: pass env=... to resume.")
        env = env if env is not None else data["config"]["env_id"]
        model = cls._from_state(data, env, device)
        remaining = data["total_timesteps"] - model.num_timesteps
        trainer = model._make_trainer(max(remaining, 1), checkpoint_path=path, **learn_kwargs)
        trainer.total_frames = data["total_timesteps"]
        trainer.load_training_state(data)
        if remaining > 0:
            model._train(trainer)
        elif model.config.collector_workers > 0:
            trainer.collector.shutdown()  # nothing left to collect: release the remote workers
        return model

    def save_replay_buffer(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(
            path, {"kind": "replay_buffer", "replay_buffer": replay_buffer_state(self.replay_buffer)}
        )

    def load_replay_buffer(self, path: str | os.PathLike, truncate_last_traj: bool = True) -> None:
        data = load_checkpoint(path)
        if data.get("kind") != "replay_buffer":
            raise CheckpointError(f"{str(path)!r} holds no replay buffer (kind={data.get('kind')!r}).")
        self.replay_buffer.empty()
        load_replay_buffer_state(self.replay_buffer, data["replay_buffer"])

"""CrossQTrainer: TorchRL's Trainer wired for CrossQ (replay buffer, update schedule,
policy delay, evaluation, logging and resumable checkpoints)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase
from torchrl.record.loggers import Logger
from torchrl.trainers import Trainer

from crossq_trl.exploration.gsde_resampling import GSDERolloutReset
from crossq_trl.modules.gsde import has_gsde
from crossq_trl.replay.priority_update import PriorityUpdate, is_prioritized
from crossq_trl.training.checkpoint import rng_state, save_checkpoint, set_rng_state
from crossq_trl.training.env_state import restore_env, snapshot_env
from crossq_trl.training.faults import CheckpointSaveError, EnvStepError, NonFiniteError, TrainingInterrupted
from crossq_trl.training.hooks import Callback, EpisodeStatistics, PeriodicEvaluation, Throughput, scalars
from crossq_trl.training.host_memory import keep_freed_memory
from crossq_trl.training.preemption import StopOnSignals
from crossq_trl.training.replay_buffer import CrossQReplayBuffer, load_replay_buffer_state, replay_buffer_state
from crossq_trl.training.update import CrossQUpdate

_CPU = torch.device("cpu")
CHECKPOINT_ERROR_POLICIES = ("stop", "continue")


class UpdateSchedule:
    """When to update and how often: sb3's ``train_freq`` and ``gradient_steps``.

    ``train_freq=(n, "step")``: the collector hands over ``n`` steps of every env, each
    batch is due. ``(n, "episode")``: due once ``n`` episodes ended since the last
    updates. ``gradient_steps=-1``: as many updates as env steps collected since then.
    The batches between two due updates are sb3's rollout; they are counted from the first
    batch on, random warm-up included (whose updates are skipped, as sb3 does).
    """

    def __init__(self, train_freq: tuple[int, str], gradient_steps: int) -> None:
        self.frequency, self.unit = train_freq
        self.gradient_steps = gradient_steps
        self.frames = self.episodes = 0

    def updates_due(self, batch: TensorDictBase) -> int:
        self.frames += batch.numel()
        if self.unit == "episode":
            self.episodes += int(batch.get(("next", "done")).sum())
            if self.episodes < self.frequency:
                return 0
        due = self.frames if self.gradient_steps == -1 else self.gradient_steps
        self.frames = self.episodes = 0
        return due

    def state_dict(self) -> dict[str, int]:
        return {"frames": self.frames, "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.frames, self.episodes = state["frames"], state["episodes"]


class CrossQTrainer(Trainer):
    """A :class:`torchrl.trainers.Trainer` for CrossQ.

    Each collected batch goes into the replay buffer; once the collector is past its
    ``init_random_frames`` (uniform random actions) and ``collected_frames`` (which a continued run starts at
    its env step) past ``learning_starts``, the
    :class:`UpdateSchedule` decides how many updates run, each on a fresh replay sample
    through the :class:`~crossq_trl.training.CrossQUpdate` stepper (critic every update,
    actor and temperature every ``policy_delay``-th); the batches of several updates due at once are drawn
    together from a uniform buffer (:meth:`~crossq_trl.training.replay_buffer.CrossQReplayBuffer.iter_batches`),
    otherwise one by one; with a prioritized buffer the priorities the update writes into each batch go back to it
    (:class:`~crossq_trl.replay.PriorityUpdate`). The collector's policy is the
    actor, kept in eval mode (acting on BRN running statistics). A gSDE actor gets new
    exploration matrices at the start of each rollout (:class:`GSDERolloutReset`).

    Logging goes through a TorchRL ``Logger`` every ``log_interval`` finished episodes
    (episode return/length, losses, alpha, entropy, env steps/s, updates/s); metrics
    stay on the device between reports. With ``checkpoint_path`` the complete training
    state (plus ``extra_state()``) is written atomically every ``checkpoint_interval``
    frames and at the end;
    :meth:`load_training_state` resumes it exactly (same env episode, same RNG streams).

    Faults stop training with an error that says what was kept (see :mod:`crossq_trl.training.faults`):

    - a NaN or infinite loss, gradient norm or parameter (flagged on the device by the update, read where
      the trainer syncs anyway: reports, evaluations, checkpoints, the end), or observation, action or
      reward from the env (checked before it enters the replay buffer): :class:`NonFiniteError`, and no
      checkpoint is written from then on, so the last one holds finite weights;
    - SIGTERM, SIGUSR1 or Ctrl-C during :meth:`train`: the current step ends, a checkpoint is written, then
      :class:`TrainingInterrupted`; the previous handlers are back once :meth:`train` returns;
    - an exception in ``env.step`` (or a dead env worker): a checkpoint of the state before the failing
      batch (the episode restarts on resume), then :class:`EnvStepError`;
    - a checkpoint that cannot be written: :class:`CheckpointSaveError` with
      ``on_checkpoint_error="stop"`` (the default: a run that cannot save is one preemption away from
      losing everything since its last checkpoint, and errors such as a read-only or full disk seldom heal
      by themselves), or a warning and a new try at the next interval with ``"continue"``; the final save
      and the one on a stop request always raise. The previous checkpoint stays intact either way.
    """

    def __init__(
        self,
        *,
        collector: Collector,
        total_frames: int,
        update: CrossQUpdate,
        replay_buffer: ReplayBuffer,
        train_freq: tuple[int, str] = (1, "step"),
        gradient_steps: int = 1,
        learning_rate: Callable[[float], float] | None = None,
        logger: Logger | None = None,
        log_interval: int = 4,
        verbose: int = 0,
        progress_bar: bool = False,
        eval_env: EnvBase | None = None,
        eval_freq: int = 0,
        n_eval_episodes: int = 10,
        stats_window_size: int = 100,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_interval: int = 50_000,
        save_replay_buffer: bool = True,
        callback: Callback | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        on_checkpoint_error: str = "stop",
        learning_starts: int = 0,
    ) -> None:
        if on_checkpoint_error not in CHECKPOINT_ERROR_POLICIES:
            raise ValueError(f"on_checkpoint_error must be 'stop' or 'continue', got {on_checkpoint_error!r}.")
        super().__init__(
            collector=collector,
            total_frames=total_frames,
            frame_skip=1,
            optim_steps_per_batch=gradient_steps,
            loss_module=update.loss,
            optimization_stepper=update,
            replay_buffer=replay_buffer,
            logger=logger,
            progress_bar=progress_bar,
            log_interval=0,  # reports are throttled by their own hooks
            save_trainer_interval=checkpoint_interval,
            save_trainer_file=checkpoint_path,
            auto_log_optim_steps=False,
        )
        update.loss.actor_network.eval()  # acting uses the BRN running statistics; the loss sets its own modes
        if update.device.type == "cpu":
            keep_freed_memory()
        self.schedule = UpdateSchedule(train_freq, gradient_steps)
        # TorchRL's Trainer updates once collected_frames reaches the collector's init_random_frames, which count
        # from the collector's own start; a run continued at env step k (a second learn call, a resume) has
        # collected_frames from k and init_random_frames learning_starts - k, so that check alone starts k early
        self.learning_starts = learning_starts
        self.learning_rate = learning_rate
        self.verbose = verbose
        self.log_interval = log_interval
        self.save_replay_buffer = save_replay_buffer
        self.extra_state = extra_state
        self.on_checkpoint_error = on_checkpoint_error
        self.last_metrics: TensorDictBase | None = None
        self._callback = callback
        self._pending_state: dict[str, Any] | None = None
        self._throughput = Throughput()
        self._next_report = log_interval
        self._last_check = (0, 0)  # updates and frames at the last non-finite check
        self._saved_at: int | None = None  # env step of the last checkpoint this run wrote

        self._updates_due = 0
        self._batches: Iterator[TensorDictBase] | None = None  # those of the updates due, drawn ahead (_sample_ahead)
        self.register_op("batch_process", self._store)
        self.register_op("batch_process", self._count_rollout)
        self.register_op("process_optim_batch", self._sample)
        if is_prioritized(replay_buffer):
            PriorityUpdate(replay_buffer).register(self)
        self.episodes = EpisodeStatistics(stats_window_size)
        self.episodes.register(self)
        self.evaluation = None
        if eval_env is not None and eval_freq > 0:
            self.evaluation = PeriodicEvaluation(eval_env, collector.policy, eval_freq, n_eval_episodes)
            self.register_op("post_steps_log", self._check_before_evaluation)
            self.evaluation.register(self)
        self.register_op("post_steps_log", self._report)
        if has_gsde(update.loss.actor_network):
            GSDERolloutReset(update.loss.actor_network, rollout_ended=lambda: self._updates_due > 0).register(self)
        self.register_op("post_steps", self._run_callback)
        self.register_op("setup", self._restore_pending_state)

    @property
    def update(self) -> CrossQUpdate:
        """The CrossQ update step (this trainer's optimization stepper)."""
        return self.optimization_stepper

    # --- the update loop -------------------------------------------------------------

    def _store(self, batch: TensorDictBase) -> TensorDictBase:
        """Add the collected transitions (``[*envs, time]``) to the replay buffer, keeping only what the loss reads,
        time-major: every env's step t, then step t + 1 (sb3's order, which n-step sampling relies on)."""
        transitions = batch.select(*self.loss_module.in_keys)
        if transitions.device != _CPU:
            transitions = transitions.cpu()
        self._check_transitions(transitions)
        if transitions.ndim != 1:
            transitions = transitions.permute(-1, *range(transitions.ndim - 1)).reshape(-1)
        self.replay_buffer.extend(transitions)
        return batch

    def _check_transitions(self, transitions: TensorDictBase) -> None:
        """Refuse NaN or infinite observations, actions and rewards before they reach the replay buffer (CPU
        tensors: no device sync). ``transitions`` is ``[*envs, time]``; the error names the env step."""
        # The sum of all the float values is finite unless one of them is NaN or inf (or a sum overflows, and the
        # search below finds nothing): one reduction per entry, ~4 us, where isfinite().all() costs ~10 us.
        floats = (value for _, value in transitions.items(True, True) if value.is_floating_point())
        if math.isfinite(sum(value.sum().item() for value in floats)):
            return
        for key, value in transitions.items(True, True):
            if not value.is_floating_point() or value.isfinite().all():
                continue
            bad = ~value.isfinite().reshape(*transitions.shape, -1).all(-1)
            time = int(bad.reshape(-1, transitions.shape[-1]).any(0).nonzero()[0])
            n_envs = transitions.numel() // transitions.shape[-1]
            name = " ".join(key) if isinstance(key, tuple) else key
            raise NonFiniteError(
                f"Non-finite {name} (NaN or inf) collected at env step {self.collected_frames + (time + 1) * n_envs}"
                f". Training stopped before it reached the replay buffer; {self._kept()}. Fix the env (or wrap it "
                "to clip or replace such values), then resume."
            )

    def _count_rollout(self, batch: TensorDictBase) -> TensorDictBase:
        self._updates_due = self.schedule.updates_due(batch)
        return batch

    def _sample(self, batch: TensorDictBase) -> TensorDictBase:
        if self._batches is not None:
            return next(self._batches)
        return self.replay_buffer.sample().to(self.update.device)

    def _sample_ahead(self, num_updates: int) -> None:
        """Several updates due on a buffer that can draw them together: :meth:`_sample` hands out their batches
        (:meth:`CrossQReplayBuffer.iter_batches`) one per update."""
        buffer = self.replay_buffer
        self._batches = None
        if num_updates > 1 and isinstance(buffer, CrossQReplayBuffer) and buffer.can_sample_batches:
            self._batches = buffer.iter_batches(num_updates, self.update.device)

    def optim_steps(self, batch: TensorDictBase) -> None:
        """Run the updates due for this batch (replaces Trainer's fixed-count loop)."""
        num_updates = self._updates_due
        if num_updates == 0 or self.collected_frames < self.learning_starts:
            return
        if self.learning_rate is not None:
            progress_remaining = max(0.0, 1.0 - self.collected_frames / self.total_frames)
            self.update.optimizers.set_learning_rate(self.learning_rate(progress_remaining))
        self._pre_optim_hook()
        self._sample_ahead(num_updates)
        for _ in range(num_updates):
            self._optim_count += 1
            sub_batch = self._process_optim_batch_hook(batch)
            metrics = self.update.step(self, sub_batch)
            self.last_metrics = metrics if self.last_metrics is None else self.last_metrics.update(metrics)
            self._post_optim_hook()
            self._post_optim_log(sub_batch)

    # --- reporting -------------------------------------------------------------------

    def report(self) -> dict[str, float]:
        """Current training statistics as Python numbers (syncs with the device)."""
        return {
            "time/total_timesteps": float(self.collected_frames),
            "time/episodes": float(self.episodes.num_episodes),
            "train/n_updates": float(self.update.num_updates),
            **self.episodes.summary(),
            **scalars(self.last_metrics),
            **(self.evaluation.last_result if self.evaluation is not None else {}),
            **self._throughput(self.collected_frames, self.update.num_updates),
        }

    def _report(self, batch: TensorDictBase | None = None) -> dict[str, float] | None:
        if self.log_interval <= 0 or self.episodes.num_episodes < self._next_report:
            return None
        while self._next_report <= self.episodes.num_episodes:
            self._next_report += self.log_interval
        self.check_finite()
        values = self.report()
        if self.verbose >= 1:
            print(" | ".join(f"{key} {value:.4g}" for key, value in values.items()), flush=True)
        return values

    def _run_callback(self) -> None:
        if self._callback is not None and self._callback(self) is False:
            self.request_stop("callback returned False")

    # --- faults ----------------------------------------------------------------------

    def train(self) -> None:
        """TorchRL's training loop, with the fault handling described in the class docstring."""
        self._last_check = (self.update.num_updates, self.collected_frames)
        with StopOnSignals(self._on_signal) as signals:
            try:
                super().train()
            except BaseException as err:
                try:
                    if isinstance(err, EnvStepError):
                        self._save_before_env_failure(err)
                    elif isinstance(err, Exception):
                        self.check_finite()  # a non-finite value may surface as another error first
                finally:
                    self.collector.shutdown()
                raise
        self.check_finite()
        if signals.received is not None and self.collected_frames < self.total_frames:
            raise TrainingInterrupted(
                f"Training stopped by {signals.received} at env step {self.collected_frames} of "
                f"{self.total_frames}; {self._resume_hint()}",
                signal=signals.received,
                env_step=self.collected_frames,
                checkpoint=None if self.save_trainer_file is None else str(self.save_trainer_file),
            )

    def _on_signal(self, name: str) -> None:
        if self.verbose >= 1:
            print(f"{name} received: finishing the current step, then writing a checkpoint", flush=True)
        self.request_stop(f"{name} received")

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if a loss, the gradient norm or the parameters became NaN or infinite
        in an update. One host sync: called where the trainer syncs anyway (reports, evaluations,
        checkpoints, the end of training)."""
        bad = self.update.first_nonfinite()
        if bad:
            updates, frames = self._last_check
            found = ", ".join(f"{quantity} (from update {update})" for quantity, update in bad.items())
            raise NonFiniteError(
                f"Non-finite {found}, first seen in updates {updates + 1}-{self.update.num_updates} (env steps "
                f"{frames + 1}-{self.collected_frames}). Training stopped; {self._kept()}. Lower the learning "
                "rate or check the env's observations and rewards, then resume from the checkpoint."
            )
        self._last_check = (self.update.num_updates, self.collected_frames)

    def _check_before_evaluation(self, batch: TensorDictBase | None = None) -> None:
        if self.evaluation.due():
            self.check_finite()

    def _save_before_env_failure(self, err: EnvStepError) -> None:
        """Checkpoint the state as of the end of the last complete batch, without the failed env's state."""
        where = f"after env step {self.collected_frames}"
        if err.completed is not None:  # steps of one env
            where = f"at env step {self.collected_frames + err.completed + 1}"
        if self.save_trainer_file is not None:
            self._save_trainer(env=False)
        err.add_note(
            f"Training stopped {where}; {self._resume_hint()} The checkpoint holds the state before the failing "
            "batch of steps; its episode restarts on resume. Fix the env first."
        )

    def _kept(self) -> str:
        if self.save_trainer_file is None:
            return "no checkpoint path was given, so nothing was saved"
        if self._saved_at is None:
            return f"the checkpoint {str(self.save_trainer_file)!r} (if any) was not overwritten"
        return f"the last checkpoint, {str(self.save_trainer_file)!r} from env step {self._saved_at}, was kept"

    def _resume_hint(self) -> str:
        if self.save_trainer_file is None:
            return "no checkpoint path was given, so nothing was saved."
        path = str(self.save_trainer_file)
        return f"checkpoint written to {path!r}: resume with `crossq-trl train --resume {path}` or CrossQ.resume."

    # --- checkpoints -----------------------------------------------------------------

    def training_state(self, env: bool = True) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it is (with ``env=False``: in a new episode)."""
        modules = {name: module.state_dict() for name, module in self._modules.items()}
        return {
            **(self.extra_state() if self.extra_state is not None else {}),
            "kind": "training",
            "loss_module": self.loss_module.state_dict(),
            "modules": modules,
            "replay_buffer": replay_buffer_state(self.replay_buffer) if self.save_replay_buffer else None,
            "schedule": self.schedule.state_dict(),
            "counters": {
                "collected_frames": self.collected_frames,
                "optim_count": self._optim_count,
                "last_save": self._last_save,
                "next_report": self._next_report,
            },
            "env": snapshot_env(self.collector) if env else None,
            "rng": rng_state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Load a :meth:`training_state`; the env and RNG streams are restored when training starts."""
        self.loss_module.load_state_dict(state["loss_module"])
        for name, module_state in state["modules"].items():
            if name in self._modules:
                self._modules[name].load_state_dict(module_state)
        if state["replay_buffer"] is not None:
            load_replay_buffer_state(self.replay_buffer, state["replay_buffer"])
        self.schedule.load_state_dict(state["schedule"])
        counters = state["counters"]
        self.collected_frames = counters["collected_frames"]
        self._optim_count = counters["optim_count"]
        self._last_save = counters["last_save"]
        self._next_report = counters["next_report"]
        self._pending_state = {"env": state["env"], "rng": state["rng"]}

    def continue_episodes(self, env_snapshot: dict[str, Any] | None) -> None:
        """Start from a :func:`~crossq_trl.training.env_state.snapshot_env` of an earlier run."""
        self._pending_state = {"env": env_snapshot}

    def _restore_pending_state(self) -> None:
        if self._pending_state is None:
            return
        restore_env(self.collector, self._pending_state["env"])
        if self._pending_state.get("rng") is not None:
            set_rng_state(self._pending_state["rng"])
        self._pending_state = None

    def _save_trainer(self, env: bool = True) -> None:
        self.check_finite()  # never overwrite a good checkpoint with non-finite weights
        try:
            save_checkpoint(self.save_trainer_file, self.training_state(env=env))
        except OSError as err:
            self._on_checkpoint_error(err)
        else:
            self._saved_at = self.collected_frames

    def _on_checkpoint_error(self, err: OSError) -> None:
        path = str(self.save_trainer_file)
        previous = "no earlier checkpoint was written by this run"
        if self._saved_at is not None:
            previous = f"the previous checkpoint there (env step {self._saved_at}) is intact"
        message = f"Could not write the checkpoint {path!r} at env step {self.collected_frames} ({err}); {previous}."
        last_chance = self._stop_training or self.collected_frames >= self.total_frames
        if self.on_checkpoint_error == "stop" or last_chance:
            raise CheckpointSaveError(
                f"{message} Training stopped: free space or fix the permissions, then resume from the checkpoint "
                "(on_checkpoint_error='continue' keeps training and tries again at the next interval)."
            ) from err
        warnings.warn(
            f"{message} Training continues (on_checkpoint_error='continue'); next try in "
            f"{self.save_trainer_interval} env steps.",
            RuntimeWarning,
            stacklevel=2,
        )

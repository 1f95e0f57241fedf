"""CrossQ's collector: TorchRL's ``Collector`` with a lean step loop for one env."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs.utils import set_exploration_type

from crossq_trl.training.faults import EnvStepError


class CrossQCollector(Collector):
    """TorchRL's :class:`~torchrl.collectors.Collector` for off-policy step-by-step collection.

    With one (unbatched) env on the policy's device, each batch runs a short loop of its
    own (then moves to ``storing_device``): the policy (or, during ``init_random_frames``, ``env.rand_action``), then
    ``env.step_and_maybe_reset``, then the next carrier, and the steps stacked once. The
    generic loop spends about 0.3 ms per step on CPU (device casts, trajectory ids, a
    stack into preallocated buffers, a clone, a scan for private keys), several times what
    a small env step costs. An env with ``buffered_rollout`` (LeanGymEnv on the CPU) goes further and writes
    each batch in one call into preallocated arrays, without a TensorDict per step: every batch of the random
    phase, and every batch of a policy that writes the action only (CrossQ's acting policy, with or without
    action noise). During the random phase, whose steps never wait for an update,
    batches are up to ``random_frames_per_batch`` steps long (a multiple of
    ``frames_per_batch``), so the per-batch work of the collector, the trainer and the
    replay buffer is paid once per chunk. Any other setup (batched or parallel envs, device
    casts) uses the generic loop. Batches are returned without a copy
    (``return_same_td``): consume them before asking for the next one.

    An exception from the env (or from the generic loop, e.g. a dead worker of a parallel env) is raised
    as :class:`~crossq_trl.training.faults.EnvStepError`, from the env's own error.

    With ``random_warmup=False`` the policy acts from the first step (sb3's ``use_sde_at_warmup``):
    ``init_random_frames`` then only delays learning (the trainer waits for it), it draws no random actions.
    """

    def __init__(self, *args, random_frames_per_batch: int = 1000, random_warmup: bool = True, **kwargs) -> None:
        super().__init__(*args, track_traj_ids=False, return_same_td=True, **kwargs)
        self.random_warmup = random_warmup
        self._exclude_private_keys = False  # nothing here writes private keys: skip the per-batch key scan
        self.random_frames_per_batch = max(self.frames_per_batch, random_frames_per_batch)
        self._lean = self.env.batch_size == torch.Size([]) and self.policy_device in (None, self.env_device)
        # an env that writes a batch of steps in one call (LeanGymEnv on the CPU) does so: every batch of the random
        # phase, and those of a policy that writes the action only (others write more keys into each step)
        buffered_rollout = getattr(self.env, "buffered_rollout", None)
        self._buffered_rollout = buffered_rollout if self._lean and self.env.device == torch.device("cpu") else None
        self._policy_writes_action_only = set(self._policy_output_keys) == {self.env.action_key}
        self._env_failed = False

    def _should_use_random_frames(self) -> bool:
        return self.random_warmup and super()._should_use_random_frames()

    def _batch_length(self) -> int:
        if not self._should_use_random_frames():
            return self.frames_per_batch
        random_left = self.init_random_frames - self._frames
        chunk = min(self.random_frames_per_batch, random_left, self.total_frames - self._frames)
        return max(self.frames_per_batch, chunk - chunk % self.frames_per_batch)

    @torch.no_grad()
    def rollout(self) -> TensorDictBase:
        if not self._lean:
            try:
                return super().rollout()
            except Exception as err:
                self._env_failed = True
                raise EnvStepError(f"Collecting a batch failed: {type(err).__name__}: {err}") from err
        random = self._should_use_random_frames()
        if self._buffered_rollout is not None and (random or self._policy_writes_action_only):
            policy = None if random else self._wrapped_policy
            try:
                with set_exploration_type(self.exploration_type):
                    batch, self._carrier = self._buffered_rollout(self._carrier, self._batch_length(), policy)
            except EnvStepError:
                self._env_failed = True
                raise
            return batch if self.storing_device in (None, batch.device) else batch.to(self.storing_device)
        steps = []
        with set_exploration_type(self.exploration_type):
            for _ in range(self._batch_length()):
                carrier = self._carrier
                if random:
                    self.env.rand_action(carrier)
                else:
                    output = self._wrapped_policy(carrier)
                    if output is not carrier:
                        carrier.update(output, keys_to_update=self._policy_output_keys)
                try:
                    step, self._carrier = self.env.step_and_maybe_reset(carrier)
                except Exception as err:
                    self._env_failed = True
                    message = f"env.step raised {type(err).__name__}: {err}"
                    raise EnvStepError(message, completed=len(steps)) from err
                steps.append(step)
        batch = steps[0].unsqueeze(0) if len(steps) == 1 else torch.stack(steps)
        return batch if self.storing_device in (None, batch.device) else batch.to(self.storing_device)

    def shutdown(self, timeout: float | None = None, close_env: bool = True, raise_on_error: bool = True) -> None:
        """TorchRL's shutdown, which runs when iteration fails too; after an env failure, an error closing the env
        (a dead worker fails it as well) is not raised, so that it cannot hide the env's own error."""
        super().shutdown(timeout, close_env, raise_on_error and not self._env_failed)

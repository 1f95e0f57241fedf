"""A TensorDict module that adds an action noise process to a policy's action."""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.nn.probabilistic import interaction_type
from tensordict.utils import NestedKey
from torchrl.data import TensorSpec

from crossq_trl.exploration.action_noise import ActionNoise
from crossq_trl.modules.specs import check_action_spec


class AdditiveActionNoise(TensorDictModuleBase):
    """Adds ``noise`` to the action a policy wrote, as sb3 does: to the action scaled to ``[-1, 1]``, the
    result clipped to the bounds, ``clip(a + (high - low) / 2 * noise, low, high)``.

    Put it after the policy, e.g. ``TensorDictSequential(policy, AdditiveActionNoise(noise, env.action_spec))``.
    Each env's process restarts on the first step of its episodes, read from ``is_init`` (TorchRL's
    ``InitTracker`` transform; :func:`~crossq_trl.make_env` writes it with ``mark_episode_start=True``):
    the state a process starts an episode with is the one sb3 gives it after resetting at the end of the
    previous one. Noise is added only under a random interaction type (TorchRL's default): deterministic
    evaluation gets the policy's action and leaves the processes untouched.
    """

    def __init__(
        self,
        noise: ActionNoise,
        action_spec: TensorSpec,
        *,
        action_key: NestedKey = "action",
        is_init_key: NestedKey = "is_init",
    ) -> None:
        super().__init__()
        action_spec = check_action_spec(action_spec, batch_dims=-1)  # a batched env's spec is fine too
        if noise.action_dim != action_spec.shape[-1]:
            raise ValueError(
                f"The action noise has {noise.action_dim} dimensions but the actions {action_spec.shape[-1]}; "
                "build it with mean and sigma of the action shape."
            )
        self.noise = noise
        self.register_buffer("low", action_spec.space.low.clone())
        self.register_buffer("high", action_spec.space.high.clone())
        self.register_buffer("half_range", (self.high - self.low) / 2)
        self.action_key, self.is_init_key = action_key, is_init_key
        self.in_keys = [action_key, is_init_key]
        self.out_keys = [action_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if interaction_type() not in (InteractionType.RANDOM, None):
            return tensordict
        is_init = tensordict.get(self.is_init_key, None)
        if is_init is None:
            raise ValueError(
                f"AdditiveActionNoise restarts the noise at episode starts and needs {self.is_init_key!r} in its "
                "input: add torchrl.envs.InitTracker() to the env (or make_env(..., mark_episode_start=True))."
            )
        action = tensordict.get(self.action_key)
        if is_init.numel() != self.noise.n_envs or action.numel() != self.noise.n_envs * self.noise.action_dim:
            raise ValueError(
                f"The action noise has n_envs={self.noise.n_envs} but the batch holds {is_init.numel()} envs "
                f"(actions of shape {tuple(action.shape)}); build the noise with n_envs={is_init.numel()}."
            )
        if is_init.any():
            self.noise.reset(is_init.reshape(-1))
        noise = self.noise.sample().to(action.device).reshape(action.shape)
        tensordict.set(self.action_key, (action + self.half_range * noise).clamp(self.low, self.high))
        return tensordict

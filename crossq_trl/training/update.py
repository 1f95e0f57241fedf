"""The CrossQ gradient update, compiled: critic every call, actor and temperature every
``policy_delay``-th call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch._inductor import config as inductor_config
from torch.optim import Optimizer
from torchrl.trainers import OptimizationStepper

from crossq_trl.objectives.crossq_loss import CrossQLoss
from crossq_trl.training.partitioner import CustomPartitionerFn, SaveActivationsPartitioner


@dataclass
class CrossQOptimizers:
    """One optimizer per parameter group of the loss; ``alpha`` is None for a fixed temperature."""

    critic: Optimizer
    actor: Optimizer
    alpha: Optimizer | None

    def all(self) -> dict[str, Optimizer]:
        named = {"critic": self.critic, "actor": self.actor, "alpha": self.alpha}
        return {name: optimizer for name, optimizer in named.items() if optimizer is not None}

    def set_learning_rate(self, learning_rate: float) -> None:
        for optimizer in self.all().values():
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):  # in place: a CUDA graph captured this tensor
                    group["lr"].fill_(learning_rate)
                else:
                    group["lr"] = learning_rate


def make_crossq_optimizers(
    loss: CrossQLoss,
    *,
    learning_rate: float = 1e-3,
    optimizer_class: type[Optimizer] = torch.optim.Adam,
    optimizer_kwargs: dict[str, Any] | None = None,
) -> CrossQOptimizers:
    """The CrossQ optimizers: actor and critic with ``optimizer_class`` (Adam with
    ``betas=(0.5, 0.999)`` unless ``optimizer_kwargs`` says otherwise), the temperature
    with a default Adam, all at ``learning_rate``. Adam and AdamW use the fused kernel; on
    CUDA they are capturable, with the learning rate a device tensor, so that steps captured
    in a CUDA graph still follow :meth:`CrossQOptimizers.set_learning_rate`."""
    kwargs = dict(optimizer_kwargs or {})
    tensor_lr = False
    if optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
        kwargs.setdefault("betas", (0.5, 0.999))
        kwargs.setdefault("fused", True)
        if loss.device.type == "cuda":
            kwargs.setdefault("capturable", True)
            tensor_lr = True

    def lr() -> float | torch.Tensor:
        """Each optimizer's own learning rate (a separate device tensor when captured in CUDA graphs)."""
        return torch.tensor(learning_rate, device=loss.device) if tensor_lr else learning_rate

    critic = optimizer_class(loss.qvalue_network.parameters(), lr=lr(), **kwargs)
    actor = optimizer_class(loss.actor_network.parameters(), lr=lr(), **kwargs)
    alpha = None
    if isinstance(loss.log_alpha, torch.nn.Parameter):
        alpha_kwargs = {key: kwargs[key] for key in ("fused", "capturable") if key in kwargs}
        alpha = torch.optim.Adam([loss.log_alpha], lr=lr(), **alpha_kwargs)
    return CrossQOptimizers(critic=critic, actor=actor, alpha=alpha)


class CrossQUpdate(OptimizationStepper):
    """One CrossQ update per call on a replay batch, in the order of the paper's code:
    the critic step, then (every ``policy_delay``-th call) the actor step on the updated
    critic and the temperature step.

    The two objectives (critic; actor + temperature) are compiled with
    ``torch.compile(fullgraph=True)``: one graph each for forward and backward, no
    host sync inside (the schedule is a Python counter, never a tensor). On CPU the actor
    objective is split into forward and backward by :class:`SaveActivationsPartitioner`.
    The fused Adam steps run after the compiled backward. On CUDA, each whole step (forward,
    backward, optimizer) is additionally captured in a CUDA graph with
    :class:`tensordict.nn.CudaGraphModule`, which copies every incoming batch into
    static buffers. Returned metrics are detached device tensors: read them (``.item()``)
    only when logging.

    Args:
        loss: the :class:`~crossq_trl.CrossQLoss` to optimize.
        optimizers: from :func:`make_crossq_optimizers`.
        policy_delay: actor and temperature update once every this many calls.
        compile: compile the objectives (``False`` runs the same code eagerly).
        cudagraphs: capture whole steps in CUDA graphs (default: when on CUDA and compiling).
    """

    def __init__(
        self,
        loss: CrossQLoss,
        optimizers: CrossQOptimizers,
        *,
        policy_delay: int = 3,
        compile: bool = True,
        cudagraphs: bool | None = None,
    ) -> None:
        if policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1, got {policy_delay}.")
        self.loss = loss
        self.optimizers = optimizers
        self.policy_delay = policy_delay
        self.num_updates = 0
        self.num_actor_updates = 0
        self.device = device = next(loss.parameters()).device
        if cudagraphs is None:
            cudagraphs = compile and device.type == "cuda"
        if cudagraphs and device.type != "cuda":
            raise ValueError("cudagraphs=True needs the loss on a CUDA device.")
        self.compiled = compile
        self.cudagraphs = cudagraphs
        critic_objective, actor_objective = self._critic_objective, self._actor_objective
        if compile:
            critic_objective = torch.compile(critic_objective, fullgraph=True)
            actor_options = None
            if device.type == "cpu" and CustomPartitionerFn and hasattr(inductor_config, "custom_partitioner_fn"):
                actor_options = {"custom_partitioner_fn": SaveActivationsPartitioner()}
            actor_objective = torch.compile(actor_objective, fullgraph=True, options=actor_options)
        self._compiled_critic_objective = critic_objective
        self._compiled_actor_objective = actor_objective
        self._critic_step = self._wrap(self._critic_step_eager)
        self._actor_step = self._wrap(self._actor_step_eager)

    def _wrap(self, step):
        if not self.cudagraphs:
            return step
        from tensordict.nn import CudaGraphModule

        return CudaGraphModule(step, in_keys=[], out_keys=[], warmup=3)

    # The objectives: pure functions of a batch, traced whole by torch.compile.
    def _critic_objective(self, batch: TensorDictBase) -> tuple[torch.Tensor, TensorDict]:
        loss_qvalue, metadata = self.loss.qvalue_loss(batch)
        return loss_qvalue, TensorDict(loss_qvalue=loss_qvalue.detach(), td_error=metadata["td_error"].mean())

    def _actor_objective(self, batch: TensorDictBase) -> tuple[torch.Tensor, TensorDict]:
        loss_actor, metadata = self.loss.actor_loss(batch)
        loss_alpha = self.loss.alpha_loss(metadata["log_prob"], tensordict=batch)
        metrics = TensorDict(
            loss_actor=loss_actor.detach(),
            loss_alpha=loss_alpha.detach(),
            alpha=self.loss._alpha,
            entropy=-metadata["log_prob"].mean(),
        )
        return loss_actor + loss_alpha, metrics

    # The steps: objective, backward, optimizer.
    def _critic_step_eager(self, batch: TensorDictBase) -> TensorDict:
        objective, metrics = self._compiled_critic_objective(batch)
        self.optimizers.critic.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizers.critic.step()
        return metrics

    def _actor_step_eager(self, batch: TensorDictBase) -> TensorDict:
        objective, metrics = self._compiled_actor_objective(batch)
        self.optimizers.actor.zero_grad(set_to_none=True)
        if self.optimizers.alpha is not None:
            self.optimizers.alpha.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizers.actor.step()
        if self.optimizers.alpha is not None:
            self.optimizers.alpha.step()
        return metrics

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        """Run one update on ``batch``; returns detached metrics of the steps that ran."""
        self.num_updates += 1
        metrics = self._critic_step(batch)
        if self.num_updates % self.policy_delay == 0:
            self.num_actor_updates += 1
            metrics = metrics.update(self._actor_step(batch))
        return metrics

    def step(self, trainer, sub_batch: TensorDictBase) -> TensorDict:
        """:class:`~torchrl.trainers.OptimizationStepper` entry point: one update."""
        return self(sub_batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_updates": self.num_updates,
            "num_actor_updates": self.num_actor_updates,
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.all().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.num_actor_updates = int(state["num_actor_updates"])
        for name, optimizer in self.optimizers.all().items():
            optimizer.load_state_dict(state["optimizers"][name])

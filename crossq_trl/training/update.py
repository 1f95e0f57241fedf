"""The CrossQ gradient update: critic every call, actor and temperature every ``policy_delay``-th
call, each kind of step one compiled graph from the replay batch to the updated weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value
from torch.optim import Optimizer
from torchrl.trainers import OptimizationStepper

from crossq_trl.modules.batch_renorm import renorm_barrier
from crossq_trl.modules.compiled import compile_method
from crossq_trl.modules.weight_norm import project_unit_norm_, unit_norm_pairs
from crossq_trl.objectives.crossq_loss import CrossQLoss
from crossq_trl.training.flat_tensors import FlatTensors
from crossq_trl.training.functional_adam import (
    adam_coefficients,
    adam_scalars,
    adam_step_,
    init_adam_state,
    supports_functional_adam,
)
from crossq_trl.training.precision import check_precision, enable_tf32, matmul_precision


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
    with a default Adam, all at ``learning_rate``. Adam and AdamW use the fused kernel when
    stepped eagerly; :class:`CrossQUpdate` runs their arithmetic inside its compiled step."""
    kwargs = dict(optimizer_kwargs or {})
    if optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
        kwargs.setdefault("betas", (0.5, 0.999))
        kwargs.setdefault("fused", True)
    critic = optimizer_class(loss.qvalue_network.parameters(), lr=learning_rate, **kwargs)
    actor = optimizer_class(loss.actor_network.parameters(), lr=learning_rate, **kwargs)
    alpha = None
    if isinstance(loss.log_alpha, torch.nn.Parameter):
        alpha = torch.optim.Adam([loss.log_alpha], lr=learning_rate, fused=kwargs.get("fused"))
    return CrossQOptimizers(critic=critic, actor=actor, alpha=alpha)


class _LossCall(nn.Module):
    """Runs a function of the loss as the forward of a module that holds the loss, so that
    ``torch.func.functional_call`` can run it on other tensors than the loss's own."""

    def __init__(self, loss: CrossQLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, function: Callable[[TensorDictBase], Any], batch: TensorDictBase) -> Any:
        return function(batch)


class _Slot:
    """Tensors of the loss (named as in :class:`_LossCall`) that travel into the graph as one flat buffer."""

    def __init__(self, names: list[str], tensors: list[Tensor]) -> None:
        self.names = names
        self.tensors = tensors
        self.layout = FlatTensors(tensors)

    def flat(self) -> Tensor:
        """The flat buffer, rebuilt from the current values if the tensors were moved since (``module.to``)."""
        if not self.layout.holds(self.tensors):
            self.layout = FlatTensors(self.tensors)
        return self.layout.flat


class _OptimizerGroup:
    """The parameters one optimizer steps (one :class:`_Slot`) and that optimizer's state.

    For Adam and AdamW (one param group) the step runs inside the update's graph on flat
    buffers (:func:`adam_step_`), with the scalars of each step computed here from the param
    group and a host-side step count; other optimizers step eagerly on the gradients the
    graph returns.
    """

    MOMENTS = ("exp_avg", "exp_avg_sq", "step")

    def __init__(self, optimizer: Optimizer, names: dict[int, str], unit_norm: list[tuple[str, str | None]]) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.slot = _Slot([names[id(p)] for p in self.params], self.params)
        # (weight, bias or None) positions in the slot of the layers kept at unit norm (modules/weight_norm.py)
        position = {name: i for i, name in enumerate(self.slot.names)}
        self.unit_norm = [
            (position[weight], None if bias is None else position[bias])
            for weight, bias in unit_norm
            if weight in position
        ]
        self.functional = supports_functional_adam(optimizer) and len(optimizer.param_groups) == 1
        if self.functional:
            init_adam_state(optimizer)
            self._gather_moments()
            # the step scalars travel in one tensor; on the CPU the same one, rewritten in place through a numpy
            # view of it (a new tensor per step costs more than the rest of this group's Python)
            self._coefficients = adam_coefficients(optimizer, optimizer.param_groups[0], 1)
            self._host_coefficients = self._coefficients.numpy() if self._coefficients.device.type == "cpu" else None
        self.sync_step_count()

    def sync_step_count(self) -> None:
        """Read the step count from the optimizer state (after construction and after ``load_state_dict``)."""
        state = self.optimizer.state.get(self.params[0], {})
        self.step_count = int(state["step"]) if "step" in state else 0

    def _gather_moments(self) -> None:
        state = self._state = self.optimizer.state
        self._moments = [FlatTensors([state[p][key] for p in self.params]).flat for key in self.MOMENTS]

    def moments(self) -> list[Tensor]:
        """Flat ``exp_avg``, ``exp_avg_sq`` and ``step``, gathered anew when the optimizer's state was replaced
        (``load_state_dict`` puts in a new state dict; the steps of ``torch.optim``'s Adam update it in place)."""
        if self.optimizer.state is not self._state:
            self._gather_moments()
        return self._moments

    def inputs(self) -> list[Tensor]:
        """What the graph needs for one Adam step: :meth:`moments` and the scalars of the step."""
        group = self.optimizer.param_groups[0]
        if self._host_coefficients is None:  # on an accelerator: a new tensor (CUDA graphs copy it in)
            return [*self.moments(), adam_coefficients(self.optimizer, group, self.step_count + 1)]
        self._host_coefficients[:] = adam_scalars(self.optimizer, group, self.step_count + 1)
        return [*self.moments(), self._coefficients]

    def step_with(self, grad: Tensor) -> None:
        """Eager ``optimizer.step()`` on a flat gradient from the graph (optimizers other than Adam/AdamW)."""
        for param, param_grad in zip(self.params, self.slot.layout.views(grad), strict=True):
            param.grad = param_grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.project_(self.slot.flat())

    def project_(self, flat: Tensor) -> None:
        """Weight normalization's projection after the step: each marked layer's output units back to unit norm."""
        views = self.slot.layout.views(flat)
        for weight, bias in self.unit_norm:
            project_unit_norm_(views[weight], None if bias is None else views[bias])


_UPDATE_ARGS = ("flats", "optimizer_inputs", "batch", "health")  # the tensor arguments of the updates
_PRIORITY = "_priority"  # the critic step's per-transition |TD error|, written into the batch by __call__

NONFINITE_QUANTITIES = ("critic loss", "actor loss", "alpha loss", "gradient norm", "parameters")
_LOSS_QUANTITIES = {"loss_qvalue": "critic loss", "loss_actor": "actor loss", "loss_alpha": "alpha loss"}


class CrossQUpdate(OptimizationStepper):
    """One CrossQ update per call on a replay batch, in the order of the paper's code:
    the critic step, then (every ``policy_delay``-th call) the actor step on the updated
    critic and the temperature step. Layers marked for weight normalization
    (:mod:`crossq_trl.modules.weight_norm`) are projected back to unit norm right after their
    optimizer step, inside the same graph.

    Each step (critic; actor and temperature) is one pure function of tensors: the loss's
    parameters and buffers (as a few flat buffers, :class:`FlatTensors`), the optimizers' state
    and step scalars and the batch go in; gradients come from ``torch.func.grad_and_value``
    over the loss run on those tensors (``functional_call``), and Adam updates them in place
    (:func:`adam_step_`). Compiled with ``torch.compile(fullgraph=True)``, forward, backward and
    optimizer step are one graph and one call: no autograd engine, no optimizer Python, no
    host sync (the schedule is a Python counter, never a tensor), and guards on the input
    tensors only. (One graph for a critic-and-actor update would save a call every
    ``policy_delay`` updates but compile the critic twice, 10-20 s more on 2 CPU cores.)

    The loss, its modules and the optimizers stay the source of truth: their tensors are
    read at every call, the optimizers' hyperparameters and learning rates too, and
    ``state_dict``/``load_state_dict`` work as usual. The graphs are specialised to the modules'
    structure and hyperparameters (e.g. the BRN momentum) at the first update. Optimizers other
    than Adam/AdamW get their gradients from the same graph and step eagerly.

    On CUDA the compiled steps are replayed as CUDA graphs (``mode="reduce-overhead"``, the
    state tensors marked static, only the batch copied in). Returned metrics are detached
    device tensors: read them (``.item()``) only when logging. ``compile=False`` runs the same
    functions eagerly.

    Non-finite values are noticed without a host sync: each step also folds into ``health`` (a small
    device tensor, see :meth:`first_nonfinite`) the update number at which a loss, the gradient norm or
    the updated parameters first became NaN or infinite. Read it where the caller syncs anyway.

    Args:
        loss: the :class:`~crossq_trl.CrossQLoss` to optimize.
        optimizers: from :func:`make_crossq_optimizers`.
        policy_delay: actor and temperature update once every this many calls.
        compile: compile the updates (``False`` runs the same code eagerly).
        cudagraphs: replay the compiled steps as CUDA graphs (default: when on CUDA and compiling).
        precision: ``"float32"`` (default); ``"bf16"``: matrix products in bfloat16 (autocast), for CPUs with
            AMX / AVX512-BF16 and for GPUs, with Batch Renormalization, losses and optimizer in float32;
            ``"tf32"``: TF32 CUDA matmuls (a process-wide PyTorch setting).
    """

    def __init__(
        self,
        loss: CrossQLoss,
        optimizers: CrossQOptimizers,
        *,
        policy_delay: int = 3,
        compile: bool = True,
        cudagraphs: bool | None = None,
        precision: str = "float32",
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
        if cudagraphs and (device.type != "cuda" or not compile):
            raise ValueError("cudagraphs=True needs compile=True and the loss on a CUDA device.")
        self.compiled = compile
        self.cudagraphs = cudagraphs
        check_precision(precision, device)
        self.precision = precision
        if precision == "tf32":
            enable_tf32()

        self._loss_call = _LossCall(loss)
        names = {id(t): f"loss.{name}" for name, t in [*loss.named_parameters(), *loss.named_buffers()]}
        unit_norm = unit_norm_pairs(loss, prefix="loss")
        self._critic = [_OptimizerGroup(optimizers.critic, names, unit_norm)]
        self._actor = [
            _OptimizerGroup(opt, names, unit_norm) for opt in (optimizers.actor, optimizers.alpha) if opt is not None
        ]
        # Every tensor of the loss travels in one of the slots: the optimizers' parameters, then the rest
        # (BRN statistics and other buffers, parameters no optimizer steps) by dtype and device.
        self._slots = [group.slot for group in self._critic + self._actor]
        in_slots = {id(t) for slot in self._slots for t in slot.tensors}
        rest: dict[tuple, list[Tensor]] = {}
        for tensor in [*loss.parameters(), *loss.buffers()]:
            if id(tensor) not in in_slots:
                rest.setdefault((tensor.dtype, tensor.device), []).append(tensor)
        self._slots += [_Slot([names[id(t)] for t in tensors], tensors) for tensors in rest.values()]
        self._batch_keys: list[NestedKey] | None = None  # set by the first batch (_keys_of)
        # [updates so far, then per NONFINITE_QUANTITIES the first update where it was non-finite (0: never)]
        self.health = torch.zeros(1 + len(NONFINITE_QUANTITIES), dtype=torch.int64, device=device)

        critic_update, actor_update = self._critic_update, self._actor_update
        if compile:
            # On CPU, per-feature values (BRN statistics, r, d) get buffers of their own: inlined, they would be
            # recomputed, square roots and divisions included, for every vector of every activation.
            options = {"realize_cpu_opcount_threshold": 4} if device.type == "cpu" else None
            compile_options = {"device": device, "mode": "reduce-overhead" if cudagraphs else None, "options": options}
            critic_update = compile_method(critic_update, _UPDATE_ARGS, **compile_options)
            actor_update = compile_method(actor_update, _UPDATE_ARGS, **compile_options)
        self._critic_step = self._stepper(critic_update, self._critic)
        self._actor_step = self._stepper(actor_update, self._actor)

    def _stepper(self, update: Callable, groups: list[_OptimizerGroup]) -> Callable[[TensorDictBase], dict]:
        """The step on a batch: gathers the current tensors, runs ``update``, advances the step counts."""

        def step(batch: TensorDictBase) -> dict[str, Tensor]:
            flats = [slot.flat() for slot in self._slots]
            optimizer_inputs = [group.inputs() for group in groups if group.functional]
            if self.cudagraphs:  # replayed in place: only the batch and the step scalars are copied in
                for tensor in (*flats, *(t for inputs in optimizer_inputs for t in inputs[:-1]), self.health):
                    torch._dynamo.mark_static_address(tensor)
            if self._batch_keys is None:
                self._batch_keys = self._keys_of(batch)
            batch_tensors = [batch.get(key) for key in self._batch_keys]
            metrics, grads = update(flats, optimizer_inputs, batch_tensors, self.health)
            for group in groups:
                group.step_count += 1
                if not group.functional:
                    group.step_with(grads[self._slots.index(group.slot)])
            return metrics

        return step

    def _keys_of(self, batch: TensorDictBase) -> list[NestedKey]:
        """The entries of the batches that go into the graphs: the loss's ``in_keys``, ``steps_to_next_obs``
        when the batches are n-step ones and ``priority_weight`` when they come from a prioritized replay buffer
        (fixed by the first batch, as the graphs are)."""
        keys = self.loss.tensor_keys
        optional = [keys.steps_to_next_obs]
        if self.loss.use_prioritized_weights in (True, "auto"):
            optional.append(keys.priority_weight)
        present = batch.keys(include_nested=True)
        return [*self.loss.in_keys, *(key for key in optional if key in present)]

    # The objectives: functions of a batch, run on the tensors each update passes in.
    def _critic_objective(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        loss_qvalue, metadata = self.loss.qvalue_loss(batch)
        td_error = metadata["td_error"]
        return loss_qvalue, {"loss_qvalue": loss_qvalue.detach(), "td_error": td_error.mean(), _PRIORITY: td_error}

    def _actor_objective(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        loss_actor, metadata = self.loss.actor_loss(batch)
        loss_alpha = self.loss.alpha_loss(metadata["log_prob"], tensordict=batch)
        metrics = {
            "loss_actor": loss_actor.detach(),
            "loss_alpha": loss_alpha.detach(),
            "alpha": self.loss._alpha,
            "entropy": -metadata["log_prob"].mean(),
        }
        return loss_actor + loss_alpha, metrics

    # The updates: pure functions of tensors, each traced whole by torch.compile.
    def _critic_update(
        self, flats: list[Tensor], optimizer_inputs: list[list[Tensor]], batch: list[Tensor], health: Tensor
    ):
        with torch.no_grad(), renorm_barrier(False):  # torch.func computes the gradients: no autograd graph
            health[0].add_(1)  # the critic step opens every update
            batch_td, inputs = self._batch(batch), iter(optimizer_inputs)
            flats = dict(enumerate(flats))
            return self._gradient_step(self._critic, self._critic_objective, flats, inputs, batch_td, health)

    def _actor_update(
        self, flats: list[Tensor], optimizer_inputs: list[list[Tensor]], batch: list[Tensor], health: Tensor
    ):
        with torch.no_grad(), renorm_barrier(False):
            batch_td, inputs = self._batch(batch), iter(optimizer_inputs)
            flats = dict(enumerate(flats))
            return self._gradient_step(self._actor, self._actor_objective, flats, inputs, batch_td, health)

    def _batch(self, tensors: list[Tensor]) -> TensorDict:
        return TensorDict(dict(zip(self._batch_keys, tensors, strict=True)), batch_size=tensors[0].shape[:1])

    def _named(self, flats: dict[int, Tensor]) -> dict[str, Tensor]:
        """Every parameter and buffer of the loss, by name, as views of the slots' flat buffers."""
        named = {}
        for index, flat in flats.items():
            slot = self._slots[index]
            named.update(zip(slot.names, slot.layout.views(flat), strict=True))
        return named

    def _gradient_step(
        self,
        groups: list[_OptimizerGroup],
        objective: Callable[[TensorDictBase], tuple[Tensor, dict[str, Tensor]]],
        flats: dict[int, Tensor],
        optimizer_inputs: Iterator[list[Tensor]],
        batch: TensorDictBase,
        health: Tensor,
    ) -> tuple[dict[str, Tensor], dict[int, Tensor]]:
        """Gradients of ``objective`` w.r.t. the groups' flat parameters, then Adam steps them in place (other
        optimizers get the gradients back), then the step's non-finite values are recorded in ``health``. BRN
        buffers are inputs too, so the passes may update them."""
        indices = [self._slots.index(group.slot) for group in groups]
        trainable = {index: flats[index] for index in indices}
        frozen = {index: flat for index, flat in flats.items() if index not in trainable}

        def run(trainable, frozen, batch):
            with matmul_precision(self.precision, self.device):
                return functional_call(self._loss_call, self._named({**trainable, **frozen}), (objective, batch))

        grads, (_, metrics) = grad_and_value(run, has_aux=True)(trainable, frozen, batch)
        eager_grads = {}
        for group, index in zip(groups, indices, strict=True):
            if group.functional:
                adam_step_(flats[index], grads[index], *next(optimizer_inputs))
                group.project_(flats[index])
            else:
                eager_grads[index] = grads[index]
        values = {quantity: metrics[key] for key, quantity in _LOSS_QUANTITIES.items() if key in metrics}
        values["gradient norm"] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
        values["parameters"] = torch.stack([flats[index].sum() for index in indices]).sum()  # NaN and inf propagate
        _record_nonfinite_(health, values)
        return metrics, eager_grads

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        """Run one update on ``batch``; returns detached metrics of the steps that ran.

        As a TorchRL loss does, the update writes each transition's priority, the critic step's
        ``|TD error|`` (computed in its graph), into ``batch`` at the loss's ``tensor_keys.priority``, where
        a prioritized buffer's ``update_tensordict_priority(batch)`` reads it."""
        self.num_updates += 1
        metrics = self._critic_step(batch)
        priority = metrics.pop(_PRIORITY)
        # a CUDA graph's output is overwritten by its next replay: the batch keeps a copy
        batch.set(self.loss.tensor_keys.priority, priority.clone() if self.cudagraphs else priority)
        if self.num_updates % self.policy_delay == 0:
            self.num_actor_updates += 1
            metrics.update(self._actor_step(batch))
        return TensorDict(metrics)

    def first_nonfinite(self) -> dict[str, int]:
        """The quantities of :data:`NONFINITE_QUANTITIES` that were NaN or infinite in some update, each with the
        number of the first such update (:attr:`num_updates` counting). Reads a device tensor: a host sync."""
        first = self.health[1:].tolist()
        return {quantity: update for quantity, update in zip(NONFINITE_QUANTITIES, first, strict=True) if update}

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
        for group in self._critic + self._actor:
            group.sync_step_count()
        self.health.zero_()
        self.health[0] = self.num_updates


def _record_nonfinite_(health: Tensor, values: dict[str, Tensor]) -> None:
    """Set ``health[1 + q]`` to the current update number ``health[0]`` where quantity ``q`` is non-finite for
    the first time; a few scalar ops inside the compiled step, no host sync."""
    finite = torch.ones(len(NONFINITE_QUANTITIES), dtype=torch.bool, device=health.device)
    for q, quantity in enumerate(NONFINITE_QUANTITIES):
        if quantity in values:
            finite[q] = torch.isfinite(values[quantity])
    first = health[1:]
    first.copy_(torch.where(~finite & (first == 0), health[0], first))

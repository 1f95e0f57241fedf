"""The CrossQ loss: SAC without target networks, with a joint-batch critic pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, TensorDictSequential, dispatch
from tensordict.utils import NestedKey
from torch import Tensor
from torch.func import functional_call
from torchrl.data.tensor_specs import Composite
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import TanhNormal
from torchrl.modules.distributions.utils import rsample_and_log_prob
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator, distance_loss

from crossq_trl.modules.critic import EnsembleQNet
from crossq_trl.modules.gsde import fresh_noise
from crossq_trl.modules.gsde_distribution import GSDETanhNormal
from crossq_trl.modules.modes import training_mode
from crossq_trl.modules.qvalue_ensemble import QValueEnsemble
from crossq_trl.objectives.categorical import categorical_td_target
from crossq_trl.objectives.return_normalizer import ReturnNormalizer


class CrossQLoss(LossModule):
    """CrossQ (Bhatt, Palenicek et al., ICLR 2024) as a TorchRL ``LossModule``.

    A drop-in for :class:`torchrl.objectives.CrossQLoss` (same constructor, keys,
    outputs and methods) that follows the paper where that class does not:
    Batch Renormalization runs in the mode each pass needs, and the default critic
    loss is the squared error ``0.5 * (Q - y)^2`` of SAC and CrossQ.

    Modes of each pass (fixed here, whatever mode the modules are in outside; each
    module gets its own mode back afterwards):

    =========================================  ==========  ===========
    pass                                       actor BRN   critic BRN
    =========================================  ==========  ===========
    ``a' ~ pi(s')`` for the target (no grad)   eval        -
    joint critic pass on ``[s, s']``            -           train
    actor loss ``a ~ pi(s)``, ``Q(s, a)``      train       eval
    =========================================  ==========  ===========

    Args:
        actor_network: a stochastic actor, e.g. :func:`~crossq_trl.make_crossq_actor`.
        qvalue_network: either the ensemble of :func:`~crossq_trl.make_crossq_critic`
            (all members in one batched pass), a plain single-critic module (copied
            into ``num_qvalue_nets`` independently initialised members), or a list
            of critics.

    Keyword Args:
        num_qvalue_nets: number of critics (must match an ensemble critic). Default 2.
        loss_function: ``"l2"`` (``0.5 * (Q - y)^2``, default), ``"l1"``, ``"smooth_l1"``, or
            ``"categorical"``: XQC's cross-entropy between the critic's categorical distribution and the
            projected bootstrap distribution (needs a critic built with ``categorical=CategoricalSupport(...)``).
        reward_normalizer: a :class:`~crossq_trl.objectives.ReturnNormalizer` (XQC's reward normalization)
            that scales the sampled rewards; its statistics are this loss's buffers.
        alpha_init: initial entropy coefficient. Default 1.0.
        min_alpha, max_alpha: optional bounds on the entropy coefficient.
        action_spec: action spec used for ``target_entropy="auto"``; read from the
            actor when omitted.
        fixed_alpha: keep ``alpha`` at ``alpha_init`` (no temperature learning).
        target_entropy: ``"auto"`` (``-dim(action)``) or a float.
        priority_key: deprecated, use ``set_keys(priority=...)``.
        separate_losses: accepted for signature compatibility; actor and critic
            never share gradients here (the actor loss reads detached critic
            parameters and the target action is sampled without gradient).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        deactivate_vmap: accepted for signature compatibility; no vmap is used.
        scalar_output_mode: with ``reduction="none"``, ``"exclude"`` (default) or
            ``"non_tensor"`` for ``alpha`` and ``entropy``.

    The critic loss is weighted by the importance-sampling weights of a prioritized replay batch (the
    ``priority_weight`` key) when the batch has them: the attribute ``use_prioritized_weights`` (``"auto"``,
    ``True`` or ``False``, as TorchRL's ``SACLoss`` constructor argument; an attribute here, so that the
    constructor stays that of TorchRL's ``CrossQLoss``).
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (``set_keys``), with TorchRL's defaults."""

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        state_action_value_log_probs: NestedKey = "state_action_value_log_probs"
        priority: NestedKey = "td_error"
        priority_weight: NestedKey = "priority_weight"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        log_prob: NestedKey = "_log_prob"
        steps_to_next_obs: NestedKey = "steps_to_next_obs"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    use_prioritized_weights: str | bool = "auto"
    default_value_estimator = ValueEstimators.TD0
    _schedulable_buffers = frozenset({"alpha_init", "min_log_alpha", "max_log_alpha", "log_alpha"})

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "l2",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec=None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        priority_key: str | None = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        reward_normalizer: ReturnNormalizer | None = None,
    ) -> None:
        self._in_keys = None
        self._out_keys = None
        super().__init__()
        self._set_deprecated_ctor_keys(priority_key=priority_key)
        if loss_function not in ("l2", "l1", "smooth_l1", "categorical"):
            raise ValueError(f"loss_function must be 'l2', 'l1', 'smooth_l1' or 'categorical', got {loss_function!r}.")
        if alpha_init <= 0:
            raise ValueError(f"alpha_init must be > 0, got {alpha_init}.")
        reduction = "mean" if reduction is None else reduction
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.reduction = reduction
        self.scalar_output_mode = "exclude" if scalar_output_mode is None else scalar_output_mode
        self.loss_function = loss_function

        self.actor_network = actor_network
        self.qvalue_network = self._as_ensemble(qvalue_network, num_qvalue_nets)
        self.num_qvalue_nets = num_qvalue_nets if not isinstance(qvalue_network, list) else len(qvalue_network)
        categorical_critic = getattr(getattr(self.qvalue_network, "module", None), "categorical", None) is not None
        if (loss_function == "categorical") != categorical_critic:
            raise ValueError(
                "loss_function='categorical' and a categorical critic go together: build the critic with "
                "make_crossq_critic(..., categorical=CategoricalSupport(...)) and pass loss_function='categorical'."
            )
        self.reward_normalizer = reward_normalizer

        device = next(self.actor_network.parameters()).device
        self.register_buffer("alpha_init", torch.tensor(float(alpha_init), device=device))
        # Registered even when None (a plain attribute first would make register_buffer raise KeyError).
        for name, bound in (("min_log_alpha", min_alpha), ("max_log_alpha", max_alpha)):
            self.register_buffer(name, None if bound is None else torch.tensor(float(bound), device=device).log())
        self.fixed_alpha = fixed_alpha
        log_alpha = torch.tensor(math.log(alpha_init), device=device)
        if fixed_alpha:
            self.register_buffer("log_alpha", log_alpha)
        else:
            self.log_alpha = torch.nn.Parameter(log_alpha)
        self._action_spec = action_spec
        self.deactivate_vmap = deactivate_vmap
        self.register_buffer("target_entropy", self._resolve_target_entropy(target_entropy, device))

    @staticmethod
    def _as_ensemble(qvalue_network, num_qvalue_nets: int) -> TensorDictModule:
        if isinstance(qvalue_network, list):
            return QValueEnsemble(qvalue_network)
        # the ensemble itself, or the last module of a critic with a features extractor in front
        last = qvalue_network[-1] if isinstance(qvalue_network, TensorDictSequential) else qvalue_network
        inner = getattr(last, "module", None)
        if isinstance(inner, EnsembleQNet):
            if inner.n_critics != num_qvalue_nets:
                raise ValueError(
                    f"num_qvalue_nets={num_qvalue_nets} but the ensemble critic has n_critics="
                    f"{inner.n_critics}; pass num_qvalue_nets={inner.n_critics}."
                )
            return qvalue_network
        return QValueEnsemble.from_module(qvalue_network, num_qvalue_nets)

    def get_action_spec(self):
        """The action spec given to the constructor, else the actor's."""
        return self._action_spec if self._action_spec is not None else getattr(self.actor_network, "spec", None)

    def _resolve_target_entropy(self, target_entropy: str | float, device: torch.device) -> Tensor:
        if target_entropy != "auto":
            return torch.tensor(float(target_entropy), device=device)
        action_spec = self.get_action_spec()
        if isinstance(action_spec, Composite):
            action_spec = action_spec.get(self.tensor_keys.action, None)
        if action_spec is None:
            raise ValueError(
                "target_entropy='auto' needs the action dimension: pass action_spec, give the actor a spec, "
                "or pass target_entropy as a float."
            )
        return torch.tensor(-float(action_spec.shape[-1]), device=device)

    # --- TorchRL CrossQLoss attributes (so code written against it runs unchanged) --------

    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0,)

    @property
    def actor_network_params(self) -> TensorDictParams:
        """The actor's parameters and buffers (the very tensors), e.g. to build an optimizer."""
        return TensorDict.from_module(self.actor_network, as_module=True)

    @property
    def qvalue_network_params(self) -> TensorDictParams:
        """The critics' parameters and buffers (the very tensors), e.g. to build an optimizer."""
        return TensorDict.from_module(self.qvalue_network, as_module=True)

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def target_entropy_buffer(self) -> Tensor:
        return self.target_entropy

    def maybe_init_target_entropy(self, fault_tolerant: bool = True) -> Tensor:
        """The target entropy (resolved at construction here)."""
        return self.target_entropy

    # --- keys and value estimator --------------------------------------------------

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(**self._value_keys())
        self._in_keys = None

    def _value_keys(self) -> dict[str, NestedKey]:
        names = ("reward", "done", "terminated", "steps_to_next_obs")
        return {name: getattr(self.tensor_keys, name) for name in names}

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams):
        """Build the bootstrap target estimator; only TD (``TD0``, ``gamma=...``) fits CrossQ's randomly sampled
        transitions. n-step returns come in with the batch, as TorchRL's ``MultiStep`` writes them (or the n-step
        replay buffer of :func:`~crossq_trl.make_replay_buffer`): the discounted reward sum, the ``"next"``
        entries k steps on and ``steps_to_next_obs = k``, which makes the bootstrap ``gamma ** k``."""
        value_type = self.default_value_estimator if value_type is None else value_type
        dispatch_value_estimator(
            self,
            value_type,
            supported=self.SUPPORTED_VALUE_ESTIMATORS,
            tensor_keys=self._value_keys(),
            value_network=None,
            **hyperparams,
        )
        return self

    @property
    def _observation_keys(self) -> list[NestedKey]:
        return [key for key in self.qvalue_network.in_keys if key != self.tensor_keys.action]

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            keys = [
                self.tensor_keys.action,
                ("next", self.tensor_keys.reward),
                ("next", self.tensor_keys.done),
                ("next", self.tensor_keys.terminated),
                *self.actor_network.in_keys,
                *[("next", key) for key in self.actor_network.in_keys],
                *self._observation_keys,
                *[("next", key) for key in self._observation_keys],
            ]
            self._in_keys = list(dict.fromkeys(keys))
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values) -> None:
        self._in_keys = values

    @property
    def out_keys(self) -> list[NestedKey]:
        if self._out_keys is None:
            self._out_keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values) -> None:
        self._out_keys = values

    # --- the three passes ----------------------------------------------------------

    def _policy(self, tensordict: TensorDictBase, *, training: bool) -> tuple[Tensor, Tensor]:
        """Sample ``a ~ pi(.|s)`` and ``log pi(a|s)``, BRN of the actor in the given mode.

        The log-prob is that of the squashed action in ``[-1, 1]``, before the affine map
        to the env's bounds, as SAC and CrossQ define it: the entropy target ``-dim(A)``
        then means the same whatever the action bounds (a TanhNormal on ``[low, high]``
        alone would score ``sum(log((high - low) / 2))`` lower).

        A gSDE actor draws the exploration matrix of each pass anew (:func:`fresh_noise`), as sb3
        resamples it before every gradient step; its acting matrices are left untouched.
        """
        inputs = tensordict.select(*self.actor_network.in_keys)
        actor = self.actor_network
        with set_exploration_type(ExplorationType.RANDOM), training_mode(actor, training), fresh_noise(actor):
            dist = actor.get_dist(inputs)
            # Reparameterised also without gradients, where it is the same draw as sample(): the noise is then
            # drawn with normal_() (compiled, a C++ call) rather than torch.normal (compiled, a Python call).
            action, log_prob = rsample_and_log_prob(dist)
        if isinstance(dist, (TanhNormal, GSDETanhNormal)):
            log_prob = log_prob + ((dist.high - dist.low) / 2).log().expand(action.shape[-1:]).sum(-1)
        return action, log_prob

    def _critic(self, tensordict: TensorDictBase, *, training: bool, detach_params: bool) -> TensorDictBase:
        """The critics' outputs: ``Q_i(s, a)`` ``[*batch, num_qvalue_nets]`` (and a categorical critic's
        log-probabilities)."""
        with training_mode(self.qvalue_network, training):
            if detach_params:
                params = {name: p.detach() for name, p in self.qvalue_network.named_parameters()}
                return functional_call(self.qvalue_network, params, (tensordict,), strict=False)
            return self.qvalue_network(tensordict)

    def _q_values(self, tensordict: TensorDictBase, *, training: bool, detach_params: bool) -> Tensor:
        """``Q_i(s, a)`` of every critic, ``[*batch, num_qvalue_nets]``."""
        critic = self._critic(tensordict, training=training, detach_params=detach_params)
        return critic.get(self.tensor_keys.state_action_value)

    @property
    def _alpha(self) -> Tensor:
        log_alpha = self.log_alpha.detach()
        if self.min_log_alpha is not None or self.max_log_alpha is not None:
            log_alpha = log_alpha.clamp(self.min_log_alpha, self.max_log_alpha)
        return log_alpha.exp()

    def _critic_distance(self, prediction: Tensor, target: Tensor) -> Tensor:
        if self.loss_function == "l2":
            return 0.5 * (prediction - target).pow(2)
        return distance_loss(prediction, target, loss_function=self.loss_function)

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss ``0.5 * sum_i (Q_i(s, a) - y)^2`` with ``y = r + gamma (1 - terminated) *
        (min_i Q_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(s')``. Returns ``(loss, {"td_error"})``.

        With ``steps_to_next_obs = k`` in the batch (n-step transitions), ``r`` is the discounted sum of k
        rewards, ``s'`` the observation k steps on (the joint pass runs on it) and ``gamma`` becomes ``gamma^k``.

        With importance-sampling weights ``w`` in the batch (``tensor_keys.priority_weight``, from a prioritized
        replay buffer), the mean is TorchRL's weighted one, ``sum_b w_b loss_b / sum_b w_b``. ``td_error`` is
        ``max_i |Q_i(s, a) - y|`` per transition, the priority TorchRL's buffers read back.

        With ``loss_function="categorical"`` the loss is the cross-entropy of :meth:`_cross_entropy`; ``td_error``
        stays ``max_i |Q_i(s, a) - y|`` with the critics' expected values. With a ``reward_normalizer`` the rewards
        are scaled first."""
        if self.reward_normalizer is not None:
            reward_key = ("next", self.tensor_keys.reward)
            tensordict = tensordict.clone(False).set(reward_key, self.reward_normalizer(tensordict.get(reward_key)))
        next_tensordict = tensordict.get("next")
        with torch.no_grad():
            next_action, next_log_prob = self._policy(next_tensordict, training=False)

        # No target network: the critic is evaluated ONCE on the joint batch [s, s'].
        # Its BRN layers then normalise with the statistics of the mixture of current
        # and next state-actions, so Q(s', a') is computed under the same normalisation
        # as Q(s, a) (separate passes would mismatch the two distributions, the reason
        # plain BN fails without target networks). The output is split back in two.
        batch = tensordict.shape[0]
        joint = TensorDict(batch_size=[2 * batch, *tensordict.shape[1:]], device=tensordict.device)
        for key in self._observation_keys:
            joint.set(key, torch.cat([tensordict.get(key), next_tensordict.get(key)]))
        joint.set(self.tensor_keys.action, torch.cat([tensordict.get(self.tensor_keys.action), next_action]))
        critic = self._critic(joint, training=True, detach_params=False)
        # Split with the critics first: the critic computes Q as [critics, batch], and this way its gradient
        # comes back in that layout (batch-contiguous), which the compiled backward of the Q head vectorizes.
        q_by_critic = critic.get(self.tensor_keys.state_action_value).movedim(0, -1)
        q_pred, q_next = (part.movedim(-1, 0) for part in q_by_critic.split(batch, dim=-1))

        next_value = (q_next.min(-1).values - self._alpha * next_log_prob).detach()
        target = self.value_estimator.value_estimate(tensordict, next_value=next_value.unsqueeze(-1))
        if self.loss_function == "categorical":
            log_probs = critic.get(self.tensor_keys.state_action_value_log_probs).split(batch, dim=0)
            loss = self._cross_entropy(tensordict, *log_probs, q_next, next_log_prob)
        else:
            loss = self._critic_distance(q_pred, target.expand_as(q_pred)).sum(-1)
        td_error = (q_pred - target).abs().max(-1).values.detach()
        weights = self._maybe_get_priority_weight(tensordict)
        return self._reduce_loss(loss, tensordict=tensordict, weights=weights), {"td_error": td_error}

    def _cross_entropy(
        self,
        tensordict: TensorDictBase,
        pred_log_probs: Tensor,
        next_log_probs: Tensor,
        q_next: Tensor,
        next_log_prob: Tensor,
    ) -> Tensor:
        """XQC's critic loss, summed over the critics: ``-sum_i p_target(i) log p_pred(i)``. The bootstrap
        distribution is that of the critic with the lowest ``Q(s', a')`` (XQC's ``argmin``), from the same joint
        pass (no target network), its atoms moved to ``r + gamma^k (1 - terminated) (z - alpha log pi(a'|s'))``
        and projected back onto the support (:func:`categorical_td_target`)."""
        with torch.no_grad():
            atoms = self.qvalue_network.module.atoms
            lowest = q_next.argmin(-1)[..., None, None].expand(*q_next.shape[:-1], 1, atoms.shape[-1])
            next_probs = next_log_probs.gather(-2, lowest).squeeze(-2).exp()  # [*batch, bins]
            next_atoms = atoms - self._alpha * next_log_prob.unsqueeze(-1)
            target_probs = categorical_td_target(next_probs, self._bootstrap(tensordict, next_atoms), atoms)
        return -(target_probs.unsqueeze(-2) * pred_log_probs).sum(-1).sum(-1)

    def _bootstrap(self, tensordict: TensorDictBase, next_values: Tensor) -> Tensor:
        """The value estimator's target for several next values per sample (``[*batch, K]``), e.g. one per atom:
        its inputs are widened to K columns, so n-step discounts and terminations stay the estimator's."""
        width = next_values.shape[-1]
        inputs = TensorDict(batch_size=tensordict.batch_size, device=tensordict.device)
        keys = [("next", getattr(self.tensor_keys, name)) for name in ("reward", "done", "terminated")]
        for key in [*keys, self.tensor_keys.steps_to_next_obs]:
            value = tensordict.get(key, None)
            if value is not None:
                inputs.set(key, value.expand(*value.shape[:-1], width))
        return self.value_estimator.value_estimate(inputs, next_value=next_values)

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Actor loss ``alpha log pi(a|s) - min_i Q_i(s, a)``, ``a ~ pi(s)`` reparameterised.

        The critic runs in eval mode on detached parameters: its weights get no
        gradient and its BRN statistics do not move. Returns ``(loss, {"log_prob"})``.
        """
        action, log_prob = self._policy(tensordict, training=True)
        critic_inputs = tensordict.select(*self._observation_keys)
        critic_inputs.set(self.tensor_keys.action, action)
        q_values = self._q_values(critic_inputs, training=False, detach_params=True)
        # min over the critics with the critics first: the gradient comes back batch-contiguous (see qvalue_loss)
        loss = self._alpha * log_prob - q_values.movedim(-1, 0).min(0).values
        return self._reduce_loss(loss, tensordict=tensordict), {"log_prob": log_prob.detach()}

    def alpha_loss(self, log_prob: Tensor, tensordict: TensorDictBase | None = None) -> Tensor:
        """Temperature loss ``-log_alpha * (log pi + target_entropy)`` (``log_prob`` detached)."""
        loss = -self.log_alpha * (log_prob.detach() + self.target_entropy)
        return self._reduce_loss(loss, tensordict=tensordict)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All three losses on one batch, plus ``alpha`` and ``entropy``; writes the priority key."""
        loss_qvalue, value_metadata = self.qvalue_loss(tensordict)
        loss_actor, actor_metadata = self.actor_loss(tensordict)
        loss_alpha = self.alpha_loss(actor_metadata["log_prob"], tensordict=tensordict)
        tensordict.set(self.tensor_keys.priority, value_metadata["td_error"])
        # Same entries as torchrl's CrossQLoss (0.14): the losses, then the per-sample "log_prob" and "td_error".
        out = {
            "loss_actor": loss_actor,
            "loss_qvalue": loss_qvalue,
            "loss_alpha": loss_alpha,
            **actor_metadata,
            **value_metadata,
        }
        entropy = -actor_metadata["log_prob"].mean()
        if self.reduction != "none":
            return TensorDict({**out, "alpha": self._alpha, "entropy": entropy})
        td_out = TensorDict(out, batch_size=tensordict.batch_size)
        if self.scalar_output_mode == "non_tensor":
            td_out.set_non_tensor("alpha", self._alpha)
            td_out.set_non_tensor("entropy", entropy)
        return td_out

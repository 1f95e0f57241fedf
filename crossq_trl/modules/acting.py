"""The CrossQ actor's action for stepping an env, without building a TorchRL distribution."""

from __future__ import annotations

from contextlib import ExitStack

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, TensorDictSequential
from tensordict.nn.probabilistic import interaction_type
from torch import Tensor
from torchrl.modules import ProbabilisticActor

from crossq_trl.modules.actor import GaussianActorNet
from crossq_trl.modules.compiled import compile_method
from crossq_trl.modules.gsde import GSDEActorNet, gsde_noise
from crossq_trl.modules.modes import training_mode

_MODE_TYPES = (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN, InteractionType.MEDIAN)


class ActingPolicy(TensorDictModuleBase):
    """The action of a :func:`~crossq_trl.make_crossq_actor` actor, for acting: the same
    network and parameters, Batch Renormalization in eval mode (running statistics, never
    updated), and the tanh-squashed Gaussian sampled directly, ``low + (high - low) *
    (tanh(loc + scale * noise) + 1) / 2``, or its mode ``tanh(loc)`` under a deterministic
    interaction type (``set_exploration_type(ExplorationType.DETERMINISTIC)``).

    The actor itself builds a ``TanhNormal`` and runs TensorDict machinery per call, about
    1 ms of Python on CPU, more than a small env step; this module does the same arithmetic
    in a third of that, and with ``compile=True`` (a few seconds of compilation on first
    use, worth it from some ten thousand steps on) in a tenth. It reads the actor's
    ``in_keys`` and writes its action key, so it serves as the policy of a collector or of
    ``env.rollout``. Use the actor itself for log-probabilities and training.

    With a gSDE actor (``make_crossq_actor(..., use_sde=True)``) the action is
    ``tanh(loc + theta(s)^T E)`` rescaled, with the actor's acting matrices ``E``, redrawn when
    due (each rollout start, see :func:`~crossq_trl.modules.gsde.reset_noise`, and every
    ``sde_sample_freq`` steps); each stochastic call is one acting step.
    """

    def __init__(self, actor: ProbabilisticActor, *, compile: bool = False) -> None:
        super().__init__()
        network = actor.module[0]
        # an actor with a features extractor: TensorDictSequential(ObservationFeatures, network)
        self.features = network[0] if isinstance(network, TensorDictSequential) else None
        net = network[-1].module if isinstance(network, TensorDictSequential) else network.module
        if not isinstance(net, (GaussianActorNet, GSDEActorNet)):
            raise TypeError(f"ActingPolicy needs an actor from make_crossq_actor, got a {type(net).__name__} network.")
        self.net = net
        self._networks = [net] if self.features is None else [self.features, net]  # plain list: registered above
        self._net_modules = [module for network in self._networks for module in network.modules()]
        self.in_keys = list(network.in_keys)
        self.out_keys = list(actor.out_keys[-1:])
        bounds = actor.module[-1].distribution_kwargs
        self.register_buffer("low", bounds["low"].clone())
        self.register_buffer("half_range", (bounds["high"] - bounds["low"]) / 2)
        gsde = isinstance(net, GSDEActorNet)
        sample, mode = (self._gsde_action, self._gsde_mode) if gsde else (self._gaussian_action, self._gaussian_mode)
        self._noise = self._gsde_matrices if gsde else self._gaussian_noise
        self._sample, self._mode = sample, mode
        if compile:
            self._sample = compile_method(sample, ("observations", "noise"), device=self.low.device)
            self._mode = compile_method(mode, ("observations",), device=self.low.device)

    def _gaussian_noise(self, tensordict: TensorDictBase) -> Tensor:
        return torch.randn(*tensordict.batch_size, *self.low.shape, device=self.low.device)

    def _gsde_matrices(self, tensordict: TensorDictBase) -> Tensor:
        return self.net.acting_matrices(tensordict.batch_size.numel())

    def _inputs(self, observations: list[Tensor]) -> list[Tensor]:
        return observations if self.features is None else [self.features.extract(observations)]

    def _gaussian_action(self, observations: list[Tensor], noise: Tensor) -> Tensor:
        loc, scale = self.net(*self._inputs(observations))
        return self.low + self.half_range * (torch.tanh(loc + scale * noise) + 1)

    def _gsde_action(self, observations: list[Tensor], noise: Tensor) -> Tensor:
        latent, loc = self.net.latent_and_mean(*self._inputs(observations))
        return self.low + self.half_range * (torch.tanh(loc + gsde_noise(latent, noise)) + 1)

    def _gaussian_mode(self, observations: list[Tensor]) -> Tensor:
        loc, _ = self.net(*self._inputs(observations))
        return self.low + self.half_range * (torch.tanh(loc) + 1)

    def _gsde_mode(self, observations: list[Tensor]) -> Tensor:
        _, loc = self.net.latent_and_mean(*self._inputs(observations))
        return self.low + self.half_range * (torch.tanh(loc) + 1)

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observations = [tensordict.get(key) for key in self.in_keys]
        with ExitStack() as modes:
            if any(m.training for m in self._net_modules):
                for network in self._networks:
                    modes.enter_context(training_mode(network, False))
            if interaction_type() in _MODE_TYPES:
                action = self._mode(observations)
            else:  # the noise is drawn here, so that compiled and eager runs take the same numbers
                action = self._sample(observations, self._noise(tensordict))
        tensordict.set(self.out_keys[0], action)
        return tensordict

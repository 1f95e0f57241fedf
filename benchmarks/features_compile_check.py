"""The compiled update with Dict observations and a learnable features extractor, own or shared: two graphs, no
graph break, no recompilation over 6 more updates, and the eager numbers (about 100 s on 2 shared CPU cores, too
long for the test suite)::

    python benchmarks/features_compile_check.py
"""

from __future__ import annotations

import copy

import torch
import torch._dynamo
from tensordict import TensorDict
from torch import nn
from torch._dynamo.utils import counters
from torchrl.data import Bounded, Composite, Unbounded

from crossq_trl import (
    BatchRenormConfig,
    CrossQLoss,
    CrossQUpdate,
    FlattenExtractor,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
)

SPEC = Composite(observation=Unbounded((4,)), achieved_goal=Unbounded((2,)), desired_goal=Unbounded((2,)))
ACTION = Bounded(-1.0, 1.0, (2,))
KEYS = list(SPEC.keys())
NETWORK = {"net_arch": [16, 16], "batch_renorm": BatchRenormConfig(warmup_steps=1, momentum=0.1)}


class LinearExtractor(nn.Module):
    """A learnable extractor of sb3's form: built from the spec, ``features_dim``, a dict in (tests use it too)."""

    def __init__(self, observation_spec: Composite, features_dim: int = 6) -> None:
        super().__init__()
        self.flatten = FlattenExtractor(observation_spec)
        self.linear = nn.Linear(self.flatten.features_dim, features_dim)
        self.features_dim = features_dim

    def forward(self, observations):
        return torch.relu(self.linear(self.flatten(observations)))


def batch(size: int = 64) -> TensorDict:
    def observations():
        return {key: torch.randn(size, *SPEC[key].shape) for key in KEYS}

    done = torch.zeros(size, 1, dtype=torch.bool)
    next_entries = {**observations(), "reward": torch.randn(size, 1), "done": done, "terminated": done.clone()}
    return TensorDict({**observations(), "action": ACTION.rand((size,)), "next": next_entries}, [size])


def check(shared: bool) -> None:
    specs = {"observation_spec": SPEC, "action_spec": ACTION, "in_keys": KEYS, **NETWORK}
    extractor = LinearExtractor(SPEC)
    actor = make_crossq_actor(**specs, features_extractor=extractor)
    critic_extractor = extractor if shared else LinearExtractor(SPEC)
    critic = make_crossq_critic(**specs, features_extractor=critic_extractor, share_features_extractor=shared)
    loss = CrossQLoss(actor, critic)
    loss.make_value_estimator(gamma=0.99)
    eager_loss = copy.deepcopy(loss)
    compiled = CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=3, compile=True)
    eager = CrossQUpdate(eager_loss, make_crossq_optimizers(eager_loss), policy_delay=3, compile=False)
    counters.clear()
    for step in range(9):
        data = batch()
        with torch._dynamo.config.patch(error_on_recompile=step >= 3):
            torch.manual_seed(step)
            compiled(data.clone())
        torch.manual_seed(step)
        eager(data.clone())
    error = max(
        (loss.state_dict()[name].double() - value.double()).abs().max().item()
        for name, value in eager_loss.state_dict().items()
        if not name.endswith("_extra_state")
    )
    graphs, breaks = counters["stats"]["unique_graphs"], dict(counters["graph_break"])
    print(f"shared={shared}: {graphs} graphs, graph breaks {breaks}, max |compiled - eager| {error:.1e}")
    assert graphs == 2 and not breaks and error < 1e-5


if __name__ == "__main__":
    torch.set_num_threads(1)
    for shared in (False, True):
        check(shared)

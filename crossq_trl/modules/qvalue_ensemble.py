"""Turn one plain Q-value TensorDictModule into an ensemble of independent copies."""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn


def reset_parameters(module: nn.Module) -> None:
    """Re-initialise every submodule that knows how to (``reset_parameters()``)."""
    for submodule in module.modules():
        reset = getattr(submodule, "reset_parameters", None)
        if callable(reset):
            reset()


class QValueEnsemble(TensorDictModuleBase):
    """``num_members`` independent copies of a Q-value module, run one after the other.

    Member 0 is the given module itself; the others are deep copies with freshly
    initialised parameters, so each has its own weights and its own normalization
    statistics. Each member writes ``out_key`` as ``[*batch, 1]`` (or ``[*batch]``);
    the ensemble writes them side by side as ``[*batch, num_members]``, the layout of
    :func:`~crossq_trl.make_crossq_critic`.
    """

    def __init__(self, members: list[TensorDictModuleBase]) -> None:
        super().__init__()
        first = members[0]
        for member in members[1:]:
            if list(member.in_keys) != list(first.in_keys) or list(member.out_keys) != list(first.out_keys):
                raise ValueError("All Q-value networks of an ensemble need the same in_keys and out_keys.")
        if len(first.out_keys) != 1:
            raise ValueError(f"A Q-value network must write exactly one key, got out_keys={first.out_keys}.")
        self.members = nn.ModuleList(members)
        self.in_keys = list(first.in_keys)
        self.out_keys = list(first.out_keys)

    @classmethod
    def from_module(cls, module: TensorDictModuleBase, num_members: int) -> QValueEnsemble:
        copies = []
        for _ in range(num_members - 1):
            member = copy.deepcopy(module)
            reset_parameters(member)
            copies.append(member)
        return cls([module, *copies])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        (out_key,) = self.out_keys
        inputs = tensordict.select(*self.in_keys)
        values = []
        for member in self.members:
            value = member(inputs.copy()).get(out_key)
            values.append(value if value.shape == inputs.batch_size else value.squeeze(-1))
        tensordict.set(out_key, torch.stack(values, dim=-1))
        return tensordict

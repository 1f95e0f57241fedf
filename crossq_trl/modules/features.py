"""Features extractors: the observation entries (a Dict observation's keys) mapped to one feature vector that
the actor and critic bodies read, as sb3's ``features_extractor_class`` does.

An extractor is a plain ``nn.Module`` built as ``extractor_class(observation_spec, **kwargs)`` from the
Composite spec of the entries it reads (unbatched), with an int attribute ``features_dim``; its forward takes
the observation as sb3 gives it (the tensor for a single entry, a dict ``{key: tensor}`` for several) and
returns ``[*batch, features_dim]``. :class:`ObservationFeatures` puts one in front of a network as a
``TensorDictModule``: it reads the entries from the tensordict and writes the features under one key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.data import Composite, TensorSpec

FEATURES_KEY = "features"


class FlattenExtractor(nn.Module):
    """Each observation entry flattened to a vector, the vectors concatenated in the spec's key order (sb3's
    ``FlattenExtractor`` for one entry, its ``CombinedExtractor`` without image CNNs for several).

    ``normalize_images`` is accepted for sb3's signature and changes nothing: images are not told apart
    here (an image entry is flattened as it comes, neither scaled by 1/255 nor given a CNN).
    """

    def __init__(self, observation_spec: Composite, normalize_images: bool = True) -> None:
        super().__init__()
        self.keys = list(observation_spec.keys(True, True))
        self.shapes = [tuple(observation_spec[key].shape) for key in self.keys]
        self.features_dim = sum(math.prod(shape) for shape in self.shapes)

    def forward(self, observations: Tensor | dict[NestedKey, Tensor]) -> Tensor:
        if isinstance(observations, Tensor):
            observations = {self.keys[0]: observations}
        flat = [
            observations[key].flatten(-len(shape)) if shape else observations[key].unsqueeze(-1)
            for key, shape in zip(self.keys, self.shapes, strict=True)
        ]
        features = flat[0] if len(flat) == 1 else torch.cat(flat, dim=-1)
        return features if features.is_floating_point() else features.float()


def entries_spec(observation_spec: Composite | TensorSpec, keys: Sequence[NestedKey]) -> Composite:
    """The unbatched Composite of the entries ``keys`` of ``observation_spec`` (what an extractor is built from);
    a plain spec is the vector of the one key."""
    if not isinstance(observation_spec, Composite):
        observation_spec = Composite({keys[0]: observation_spec}, shape=observation_spec.shape[:-1])
    missing = [key for key in keys if key not in observation_spec.keys(True)]
    if missing:
        raise KeyError(
            f"Observation keys {missing} are not in the observation spec (keys: "
            f"{list(observation_spec.keys(True, True))}); pass in_keys matching your env."
        )
    entries = Composite({key: observation_spec[key] for key in keys}, shape=observation_spec.shape)
    return entries[(0,) * entries.ndim] if entries.ndim else entries


def make_features_extractor(
    extractor_class: type[nn.Module], observation_spec: Composite | TensorSpec, keys: Sequence[NestedKey], **kwargs: Any
) -> nn.Module:
    """``extractor_class(spec of keys, **kwargs)``, checked for a positive int ``features_dim``."""
    extractor = extractor_class(entries_spec(observation_spec, keys), **kwargs)
    features_dim = getattr(extractor, "features_dim", None)
    if not isinstance(features_dim, int) or features_dim < 1:
        raise ValueError(
            f"The features extractor {extractor_class.__name__} must set an int attribute features_dim >= 1 (the "
            f"size of the vector its forward returns), got {features_dim!r}."
        )
    return extractor


class ObservationFeatures(TensorDictModuleBase):
    """A features extractor as a TensorDict module: reads ``in_keys``, writes ``out_key``.

    With ``shared=True`` the extractor belongs to another network (the actor's, sb3's
    ``share_features_extractor=True``): it is used here but not registered as a submodule, so its parameters,
    state and mode stay the owner's alone (one optimizer, one copy in a ``state_dict``, no tied weights for
    ``torch.func`` to untie), and the features carry no gradient back to it: only the owner's loss trains it.
    """

    def __init__(
        self, extractor: nn.Module, in_keys: Sequence[NestedKey], out_key: NestedKey = FEATURES_KEY, shared=False
    ) -> None:
        super().__init__()
        if shared:  # a plain attribute, which nn.Module does not register
            object.__setattr__(self, "extractor", extractor)
        else:
            self.extractor = extractor
        self.in_keys = list(in_keys)
        self.out_keys = [out_key]
        self.shared = shared

    @property
    def features_dim(self) -> int:
        return self.extractor.features_dim

    def extract(self, observations: Sequence[Tensor]) -> Tensor:
        """Features of the entries, given in ``in_keys`` order (a tensor for one entry, a dict for several)."""
        inputs = observations[0] if len(observations) == 1 else dict(zip(self.in_keys, observations, strict=True))
        features = self.extractor(inputs)
        return features.detach() if self.shared else features

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set(self.out_keys[0], self.extract([tensordict.get(key) for key in self.in_keys]))
        return tensordict

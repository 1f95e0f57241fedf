"""``torch.compile`` for methods whose graphs depend on their tensor arguments only."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch


def compile_method(
    method: Callable,
    tensor_args: Sequence[str],
    *,
    mode: str | None = None,
    options: dict[str, Any] | None = None,
) -> Callable:
    """``torch.compile(method, fullgraph=True, dynamic=False)`` that checks, per call, only the guards on the
    tensors passed in ``tensor_args`` (dtype, shape, strides).

    Everything else the method reads (module structure, hyperparameters, the modules' own tensors) is taken to
    be fixed for the life of its object: Dynamo installs thousands of guards on it, whose evaluation costs more
    than a small compiled step itself. The method gets a code object of its own, since ``torch.compile`` keeps
    one cache of graphs per code object: with these few guards, a shared code object would let one object's
    graphs serve another of the same shapes but another configuration.
    """
    prefixes = tuple(f"{name}[" for name in tensor_args) + tuple(tensor_args)

    def input_guards(guards) -> list[bool]:
        return [guard.guard_type == "TENSOR_MATCH" and guard.name.startswith(prefixes) for guard in guards]

    function = method.__func__
    code = function.__code__.replace()
    copy = types.FunctionType(
        code, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    options = {**(options or {}), "guard_filter_fn": input_guards}
    return torch.compile(
        types.MethodType(copy, method.__self__), fullgraph=True, dynamic=False, mode=mode, options=options
    )

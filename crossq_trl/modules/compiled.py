"""``torch.compile`` for methods whose graphs depend on their tensor arguments only."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tensordict import TensorDict
from torch.utils._pytree import tree_flatten, tree_unflatten

_AUTOGRAD_FUNCTION_APPLY = "torch.ops.higher_order.autograd_function_apply"  # how a Function appears in a graph


def compile_method(
    method: Callable,
    tensor_args: Sequence[str],
    *,
    device: torch.device,
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

    On CPU the graphs get Inductor's C++ wrapper: each graph is one shared library (one compiler run instead of
    one per kernel, a third less cold compile time) and its kernels are called from C++ rather than Python
    (about 7% more updates/s at [256, 256], 15% faster actions).

    The graphs are admitted to AOTAutograd's on-disk cache even when they hold a custom ``torch.autograd.Function``
    (the critic's widening layers, see :class:`~crossq_trl.modules.EnsembleLinear`), which torch 2.13 still keeps
    out of it by default while the admission is being tested. Dynamo traces the Function's forward and backward
    into the graph, so the cache key covers them. A later process then skips AOTAutograd's tracing and partitioning
    of the joint graph: about 4 s of a 14 s warm start.
    """
    prefixes = tuple(f"{name}[" for name in tensor_args) + tuple(tensor_args)
    _register_tensordict_constructor()

    def input_guards(guards) -> list[bool]:
        return [guard.guard_type == "TENSOR_MATCH" and guard.name.startswith(prefixes) for guard in guards]

    function = method.__func__
    code = function.__code__.replace()
    copy = types.FunctionType(
        code, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    options = {**({"cpp_wrapper": True} if device.type == "cpu" else {}), **(options or {})}
    options.setdefault("unsafe_marked_cacheable_functions", {_AUTOGRAD_FUNCTION_APPLY: "crossq_trl"})
    options["guard_filter_fn"] = input_guards
    return torch.compile(
        types.MethodType(copy, method.__self__), fullgraph=True, dynamic=False, mode=mode, options=options
    )


def _register_tensordict_constructor() -> None:
    """Have tensordict register TensorDict's pytree constructor now, before any tracing. It does so lazily, by
    an insertion into a module-level defaultdict; were that first insertion traced, Dynamo would replay the
    whole dict (some forty entries) after every call of the compiled function."""
    tree_unflatten(*tree_flatten(TensorDict()))

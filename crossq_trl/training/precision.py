"""Reduced-precision matrix products for the update step, opt-in."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("float32", "bf16", "tf32")


def check_precision(precision: str, device: torch.device) -> None:
    """Reject what cannot work (an unknown name, TF32 off CUDA); warn where bf16 has no hardware support."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(
            "precision='tf32' is a CUDA matmul mode; on a CPU use 'bf16' (AMX / AVX512-BF16) or 'float32'."
        )
    if precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn(
            "precision='bf16' on a CPU without AVX512-BF16 or AMX: the products are emulated and slower than "
            "float32. Use precision='float32' here.",
            stacklevel=3,
        )


def matmul_precision(precision: str, device: torch.device) -> AbstractContextManager:
    """The context of the update's passes: with ``"bf16"``, matrix products take bfloat16 inputs (autocast);
    the networks keep Batch Renormalization and their outputs in float32. ``"tf32"`` is a process-wide CUDA
    setting (:func:`enable_tf32`), ``"float32"`` changes nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def enable_tf32() -> None:
    """Let CUDA matmuls and convolutions run in TF32 (process-wide, as PyTorch offers it)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

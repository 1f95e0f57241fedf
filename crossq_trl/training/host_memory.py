"""Keep freed host memory for reuse, so that a compiled CPU update does not page-fault on every call."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks up to ``threshold`` bytes for reuse. Returns whether it applied.

    PyTorch allocates CPU tensors with plain ``malloc``, and glibc serves blocks above a few
    hundred kB with a fresh ``mmap`` and gives them back to the OS when freed. A compiled
    update allocates its activations and gradients anew on every call, so every update
    page-faults through megabytes of freshly zeroed pages: 10-20% of a small-network update
    on this project's benchmark machine, and its largest source of variance. Raising the
    mmap and trim thresholds keeps those blocks in the heap, reused from call to call. The
    setting is process-wide and harmless for other code (memory freed by the process is
    kept for its own later use); it is a no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold))

"""Host memory: stop freed large tensors from staying resident (glibc malloc, issue 12).

glibc serves a large allocation with its own ``mmap`` and unmaps it on free, *until* such a block
is freed: then it raises its mmap threshold to that block's size (up to 32 MiB), and later tensors
of that size come from the heap, where freed memory stays resident and fragments. A patch run
frees large tensors all the time (activations each step, the live weights rebuilt per module), so
on the memory bench (bf16 checkpoint, fp32 compute) the peak RSS of Panacea was ~1.0 GB with the
dynamic threshold and 0.65 GB with a fixed one, same tensors (docs/PERFORMANCE.md).

``prefer_mmap()`` fixes the threshold (``mallopt(M_MMAP_THRESHOLD, 256 KiB)``), which also turns
the dynamic adjustment off: blocks of 256 KiB and more are mapped and returned to the system when
freed. It changes no result, only where memory comes from. It acts once per process, on Linux
with glibc; ``PANACEA_MALLOC_TUNING=0`` leaves malloc alone (as does an explicit
``MALLOC_MMAP_THRESHOLD_`` in the environment).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("panacea_patch")

ENV_VAR = "PANACEA_MALLOC_TUNING"
M_MMAP_THRESHOLD = -3
THRESHOLD = 256 * 1024
_state: dict[str, bool] = {}


def prefer_mmap(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (once per process); True when it is in effect."""
    if "done" in _state:
        return _state["done"]
    _state["done"] = False
    if os.environ.get(ENV_VAR, "1").strip() == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _state["done"] = ok
    if ok:
        log.debug("malloc: mmap threshold fixed at %d bytes", threshold)
    return ok

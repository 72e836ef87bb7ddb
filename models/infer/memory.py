"""Keep the memory of freed activations in the process, so a forward does not fault it back in.

Why: a 384-token forward allocates and frees activations of 0.5-2.4 MB. Under glibc's defaults,
blocks that size can come from fresh `mmap`s or from a heap top that `free` trims back to the
kernel, and then every forward touches new pages: in a process running 384-token forwards back to
back, thousands of minor page faults per forward (tests/unit/infer/test_memory.py: 6,000-9,000 with
the defaults, a few dozen to about a hundred with this). Raising the mmap and trim thresholds once
per process keeps freed blocks for the next forward, as ONNX Runtime's arena does; the process keeps
its high-water mark of activation memory (tens of MB at batch 1).
`DYNAQA_KEEP_FREED_MEMORY=off` keeps the defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

KEEP_ENV = "DYNAQA_KEEP_FREED_MEMORY"
# mallopt(3) parameters; the mmap threshold's ceiling on 64-bit glibc is 32 MiB.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def wanted() -> bool:
    """Whether `DYNAQA_KEEP_FREED_MEMORY` leaves the thresholds to be raised (the default)."""
    return os.environ.get(KEEP_ENV, "on").lower() not in {"off", "0", "false"}


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). False where it is turned off or
    the C library has no working `mallopt` (musl's refuses, macOS has none): those keep their
    allocator's own behaviour."""
    if not wanted():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.info("mallopt refused the thresholds (not glibc?): the allocator keeps its own behaviour")
        return False
    return True

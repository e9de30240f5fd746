"""Keep freed host memory for reuse (glibc's malloc), so the engine's CPU runs do not page-fault.

The engine allocates and frees multi-MB buffers (keys/values, scores, MLP activations) every
layer of every batch. glibc serves a block above its mmap threshold (adaptive, at most 32 MB by
default) with fresh pages, and returns freed memory at the top of the heap to the system past its
trim threshold; every first touch of such a page is a page fault. Measured on the 2-vCPU dev VM
(2026-11-27, the bench's case (a), one thread): 70k-480k minor faults and 0.1-0.8 s of system time
per 2.2 s sweep by default, under 1k faults and 0.02 s with the thresholds below. PyTorch's CPU
tuning guide gives the same advice in the form of jemalloc/tcmalloc (LD_PRELOAD), which a worker
cannot arrange for itself.

The setting is per process: freed memory up to `TRIM` stays with the process. A no-op where the C
library has no mallopt (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP = 256 << 20  # blocks below this come from the heap, reused; glibc may cap it (then 32 MB)
TRIM = 1 << 30  # free memory kept at the heap's top before any is returned


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when they were set."""
    try:
        libc = ctypes.CDLL(None)  # the C library already loaded into this process
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    if not mallopt(M_MMAP_THRESHOLD, MMAP) and not mallopt(M_MMAP_THRESHOLD, 32 << 20):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM))

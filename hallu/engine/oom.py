"""Out of memory: recognise it, and halve the batch that caused it (one rule for both engines)."""

from __future__ import annotations

import torch


def is_oom(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def halve_on_oom(err: BaseException, size: int) -> int:
    """The batch size to retry with after `err`; re-raises `err` if it is not out-of-memory or
    the batch is one row already (nothing left to halve)."""
    if size <= 1 or not is_oom(err):
        raise err
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return size // 2

"""The one out-of-memory rule both engines use: halve on OOM, re-raise anything else."""

from __future__ import annotations

import pytest
import torch

from hallu.engine.oom import halve_on_oom, is_oom


def test_oom_kinds_are_recognised_and_others_are_not():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("can't allocate memory"))


def test_halving_returns_half_and_reraises_what_it_cannot_fix():
    assert halve_on_oom(MemoryError(), 9) == 4
    assert halve_on_oom(torch.OutOfMemoryError("oom"), 2) == 1
    with pytest.raises(MemoryError):  # one row: nothing left to halve
        halve_on_oom(MemoryError(), 1)
    with pytest.raises(RuntimeError, match="shape"):  # not a memory error: the caller's bug
        halve_on_oom(RuntimeError("shape mismatch"), 8)

"""Compare baseline gaps with the measured noise floor (`noise_floor.json`, hallu/run/noise.py)."""

from __future__ import annotations

import numpy as np

INSIDE = "inside noise floor"
UNKNOWN = "floor not measured"


def flag_gap(gap: float, gap_floor: float | None) -> str:
    """'' if |gap| is above the floor; else why a ratio with this denominator is no finding."""
    if gap_floor is None:
        return UNKNOWN
    if not np.isfinite(gap) or abs(gap) <= gap_floor:
        return INSIDE
    return ""


def inside(gaps: np.ndarray, gap_floor: float | None) -> np.ndarray:
    """Boolean mask of gaps inside the floor (all False when the floor is unknown)."""
    if gap_floor is None:
        return np.zeros(np.shape(gaps), dtype=bool)
    g = np.asarray(gaps, dtype=float)
    return ~np.isfinite(g) | (np.abs(g) <= gap_floor)

"""The locus: the contiguous band of layers where patching the last position measurably restores.

Each direction's profile is its per-layer restoration at the last position (ratio of means over
pairs) divided by its own maximum, so a direction with a weaker effect is not given a narrower
band: the band is the contiguous run of layers, around the normalised profile's peak, whose
restoration has its t interval (hallu/analysis/intervals.py) above 0. It depends on where the
patch restores measurably, not on how much: scaling one direction's effect moves no edge.
Relative depth = layer / (n_layers - 1), so models of different depth compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Locus:
    first: int
    last: int
    peak: int  # the layer of the profile's maximum
    n_layers: int
    profile: tuple[float, ...]  # restoration / its maximum, per swept layer

    def describe(self) -> str:
        depth = self.n_layers - 1 or 1
        return (
            f"layers {self.first}-{self.last} (relative depth {self.first / depth:.2f}-"
            f"{self.last / depth:.2f}; peak at layer {self.peak})"
        )


def band_of(estimate: np.ndarray, lo: np.ndarray) -> tuple[int, int, int] | None:
    """(first, last, peak) index: the contiguous run with lo > 0 around the largest estimate
    among such layers; None if no layer's interval lies above 0."""
    above = np.nan_to_num(lo, nan=-np.inf) > 0
    if not above.any():
        return None
    peak = int(np.nanargmax(np.where(above, estimate, -np.inf)))
    first = last = peak
    while first > 0 and above[first - 1]:
        first -= 1
    while last < len(above) - 1 and above[last + 1]:
        last += 1
    return first, last, peak


def locate(layers: list[int], estimate: np.ndarray, lo: np.ndarray, n_layers: int) -> Locus | None:
    """The locus of one direction from its per-layer restoration and interval lower bounds."""
    band = band_of(estimate, lo)
    if band is None:
        return None
    first, last, peak = band
    top = float(estimate[peak])
    profile = tuple(float(x) / top for x in estimate)
    return Locus(layers[first], layers[last], layers[peak], n_layers, profile)

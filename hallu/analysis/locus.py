"""The locus: the contiguous band of layers that holds most of the effect, with an interval.

The per-layer effect is the restoration at the last position (ratio of means over pairs),
clipped at 0. The locus is the *shortest* contiguous band of swept layers whose summed effect
reaches `share` (default 80%) of the total; ties go to the band with the larger sum. Run on each
bootstrap resample of pairs, it gives percentile intervals for the band's first and last layer.
Relative depth = layer / (n_layers - 1), so models of different depth compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def band_of(effect: np.ndarray, share: float = 0.8) -> tuple[int, int] | None:
    """(first, last) index of the shortest band holding `share` of the positive effect."""
    e = np.clip(np.nan_to_num(effect, nan=0.0), 0, None)
    total = e.sum()
    if total <= 0:
        return None
    csum = np.concatenate([[0.0], np.cumsum(e)])
    best: tuple[int, int, float] | None = None
    for i in range(len(e)):
        for j in range(i, len(e)):
            s = csum[j + 1] - csum[i]
            if s >= share * total - 1e-12:
                if best is None or (j - i, -s) < (best[1] - best[0], -best[2]):
                    best = (i, j, s)
                break  # longer bands from i are no shorter
    assert best is not None
    return best[0], best[1]


@dataclass(frozen=True)
class Locus:
    first: int
    last: int
    first_ci: tuple[float, float]
    last_ci: tuple[float, float]
    share: float
    n_layers: int
    found_in: float  # share of resamples where some band existed
    # Per resample, the band's first and last layer (NaN where none): for paired differences.
    first_samples: np.ndarray = field(default_factory=lambda: np.empty(0), compare=False)
    last_samples: np.ndarray = field(default_factory=lambda: np.empty(0), compare=False)

    def describe(self) -> str:
        depth = self.n_layers - 1 or 1
        return (
            f"layers {self.first}-{self.last} (relative depth {self.first / depth:.2f}-"
            f"{self.last / depth:.2f}); 95% interval of the first layer "
            f"[{self.first_ci[0]:.0f}, {self.first_ci[1]:.0f}], of the last "
            f"[{self.last_ci[0]:.0f}, {self.last_ci[1]:.0f}]"
        )


def locate(
    layers: list[int], curve_samples: np.ndarray, n_layers: int, share: float = 0.8
) -> Locus | None:
    """curve_samples [B + 1, n_swept_layers]: row 0 the data's per-layer effect, rest resamples."""
    point = band_of(curve_samples[0], share)
    if point is None:
        return None
    firsts, lasts = [], []
    first_s = np.full(len(curve_samples) - 1, np.nan)
    last_s = np.full(len(curve_samples) - 1, np.nan)
    for i, row in enumerate(curve_samples[1:]):
        b = band_of(row, share)
        if b is not None:
            firsts.append(layers[b[0]])
            lasts.append(layers[b[1]])
            first_s[i], last_s[i] = layers[b[0]], layers[b[1]]
    if not firsts:
        firsts, lasts = [layers[point[0]]], [layers[point[1]]]
    q = [2.5, 97.5]
    return Locus(
        layers[point[0]],
        layers[point[1]],
        tuple(np.percentile(firsts, q)),  # type: ignore[arg-type]
        tuple(np.percentile(lasts, q)),  # type: ignore[arg-type]
        share,
        n_layers,
        len(firsts) / max(1, len(curve_samples) - 1),
        first_s,
        last_s,
    )

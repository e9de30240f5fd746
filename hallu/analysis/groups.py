"""Every identity in the rows (each metric, component, head, window and control) summarised on
its own, for the tests and tools that look past the main identity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hallu.analysis import bootstrap
from hallu.analysis.directions import SHORT
from hallu.analysis.grid import Key, PairGrid, build, keys
from hallu.analysis.results import Options


@dataclass(frozen=True)
class GroupSummary:
    """One identity's numbers (every metric, component, head, window and control separately)."""

    key: Key
    n_pairs: int
    band_mean: float | None  # ratio of means at the last position over the band, all pairs
    top_layer: int | None  # the cell with the largest |mean restoration| (ratio of means)
    top_position: int | None
    top_value: float | None

    def describe(self) -> str:
        k = self.key
        name = f"{SHORT.get(k.direction, k.direction)} {k.metric} {k.component}"
        name += f" head {k.head}" if k.head is not None else ""
        name += f" window {k.window}" if k.window != 1 else ""
        name += f" control {k.control}" if k.control else ""
        band = "n/a" if self.band_mean is None else f"{self.band_mean:.3f}"
        top = (
            "n/a"
            if self.top_value is None
            else f"{self.top_value:.3f} at layer {self.top_layer}, position {self.top_position}"
        )
        return f"{name}: band mean {band}; top cell {top} ({self.n_pairs} pairs)"


def _group(grid: PairGrid, band: list[int]) -> GroupSummary:
    w = np.ones((1, len(grid.pair_ids)))
    try:
        band_mean = float(bootstrap.band_samples(grid, band, w)[0])
    except ValueError:
        band_mean = None
    est = bootstrap.cells(grid, np.vstack([w, w]), 0.95).estimate
    top = None
    if np.isfinite(est).any():
        i, j = np.unravel_index(np.nanargmax(np.abs(est)), est.shape)
        top = (grid.layers[i], grid.positions[j], float(est[i, j]))
    return GroupSummary(
        grid.key, len(grid.pair_ids), band_mean, *(top if top else (None, None, None))
    )


def groups(table: pa.Table, n_layers: int, opts: Options | None = None) -> list[GroupSummary]:
    """Every identity in the rows, summarised on its own: no row of one reaches another."""
    band = (opts or Options()).band or bootstrap.default_band(n_layers)
    out = []
    for key in keys(table):
        grid = build(table, key)
        if grid is not None:
            out.append(_group(grid, band))
    return out

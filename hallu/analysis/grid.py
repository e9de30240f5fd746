"""A run's rows for one direction (and control) as arrays indexed by pair, layer and position.

Positions are counted from the end (`position_from_end`), so pairs of different lengths line up
on the chat template's final tokens; a cell a pair does not have is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class PairGrid:
    pair_ids: list[str]
    layers: list[int]
    positions: list[int]  # position_from_end, ascending (-1 is the last token)
    clean: np.ndarray  # [n_pairs] metric of the source run
    corrupted: np.ndarray  # [n_pairs] metric of the target run
    patched: np.ndarray  # [n_pairs, n_layers, n_positions], NaN where the pair has no such cell

    @property
    def gap(self) -> np.ndarray:
        return self.clean - self.corrupted

    def subset(self, pair_ids: list[str]) -> PairGrid:
        idx = [self.pair_ids.index(p) for p in pair_ids]
        return PairGrid(
            list(pair_ids),
            self.layers,
            self.positions,
            self.clean[idx],
            self.corrupted[idx],
            self.patched[idx],
        )


def select(table: pa.Table, direction: str, control: str | None = None) -> pa.Table:
    keep = pc.equal(table["direction"], direction)
    if control is None:
        keep = pc.and_(keep, pc.is_null(table["control"]))
    else:
        keep = pc.and_(keep, pc.equal(table["control"], control))
    return table.filter(keep)


def build(table: pa.Table, direction: str, control: str | None = None) -> PairGrid | None:
    """The grid of `direction` (experiment rows, or one control's); None if it has no rows."""
    sub = select(table, direction, control)
    if sub.num_rows == 0:
        return None
    pid = np.asarray(sub["pair_id"].to_pylist(), dtype=object)
    layer = sub["layer"].to_numpy().astype(int)
    pfe = sub["position_from_end"].to_numpy().astype(int)
    pair_ids, pi = np.unique(pid, return_inverse=True)
    layers, li = np.unique(layer, return_inverse=True)
    positions, qi = np.unique(pfe, return_inverse=True)
    patched = np.full((len(pair_ids), len(layers), len(positions)), np.nan)
    patched[pi, li, qi] = sub["patched"].to_numpy(zero_copy_only=False).astype(float)
    clean = np.zeros(len(pair_ids))
    corrupted = np.zeros(len(pair_ids))
    clean[pi] = sub["clean"].to_numpy(zero_copy_only=False).astype(float)
    corrupted[pi] = sub["corrupted"].to_numpy(zero_copy_only=False).astype(float)
    return PairGrid(
        [str(p) for p in pair_ids],
        [int(v) for v in layers],
        [int(v) for v in positions],
        clean,
        corrupted,
        patched,
    )

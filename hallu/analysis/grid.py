"""A run's rows for one identity (direction, metric, component, head, window, control) as arrays
indexed by pair, layer and position.

Every grouping keys on every identity column: rows of another metric, head, window or control
never land in the same grid, and two rows that would fill the same (pair, layer, position) cell
are an error, never a silent overwrite. Positions are aligned either from the end
(`position_from_end`, -1 = the last token: pairs of different lengths line up on the chat
template's final tokens) or on the marker (`position_from_marker`, 0 = the marker token). A cell
a pair does not have is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# "anchor": a column hallu/analysis/cell_maps.py derives from `anchor` and `anchor_offset`
ALIGN_COLUMN = {
    "end": "position_from_end",
    "marker": "position_from_marker",
    "anchor": "anchor_position",
}
MAIN_METRIC = "logit_diff"


@dataclass(frozen=True)
class Key:
    """The identity columns of a grid; `head`/`window`/`control` None where not applicable."""

    direction: str
    metric: str = MAIN_METRIC
    component: str = "resid_pre"
    head: int | None = None
    window: int = 1
    control: str | None = None


@dataclass(frozen=True)
class PairGrid:
    pair_ids: list[str]
    layers: list[int]
    positions: list[int]  # aligned positions, ascending (-1 = last token when aligned on the end)
    clean: np.ndarray  # [n_pairs] metric of the source run
    corrupted: np.ndarray  # [n_pairs] metric of the target run
    patched: np.ndarray  # [n_pairs, n_layers, n_positions], NaN where the pair has no such cell
    key: Key | None = None
    align: str = "end"
    resolution: np.ndarray | None = None  # [n_pairs] largest rounding step among a pair's rows

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
            self.key,
            self.align,
            None if self.resolution is None else self.resolution[idx],
        )


def _eq(table: pa.Table, column: str, value: object) -> pa.ChunkedArray:
    if value is None:
        return pc.is_null(table[column])
    return pc.fill_null(pc.equal(table[column], value), False)


def select(table: pa.Table, key: Key) -> pa.Table:
    """The rows of exactly this identity."""
    keep = _eq(table, "direction", key.direction)
    for column, value in (
        ("metric", key.metric),
        ("component", key.component),
        ("head", key.head),
        ("layer_window", key.window),
        ("control", key.control),
    ):
        keep = pc.and_(keep, _eq(table, column, value))
    return table.filter(keep)


def keys(table: pa.Table) -> list[Key]:
    """Every identity present in the rows, in a stable order."""
    cols = ["direction", "metric", "component", "head", "layer_window", "control"]
    # Grouped in Arrow: one Python tuple per identity, never one per row.
    distinct = table.select(cols).group_by(cols, use_threads=False).aggregate([])
    seen = {tuple(r[c] for c in cols) for r in distinct.to_pylist()}
    order = sorted(seen, key=lambda t: tuple("" if v is None else str(v) for v in t))
    return [Key(d, m, c, h, int(w), ctl) for d, m, c, h, w, ctl in order]


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[object]]:
    """(indices, dictionary values) of a column; a dictionary column whose chunks share one
    dictionary (hallu/store/narrow.py) is read as is, a plain one is encoded first."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    if column.num_chunks == 0:
        return np.zeros(0, dtype=np.int64), []
    arr = column.combine_chunks()
    return arr.indices.to_numpy(zero_copy_only=False), arr.dictionary.to_pylist()


def _pair_index(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """Sorted distinct pair ids and each row's index into them, from the column's dictionary
    codes (no Python string per row); the same as np.unique(ids, return_inverse=True)."""
    idx, values = _codes(column)
    pair_ids = sorted({str(values[i]) for i in np.unique(idx)})
    rank = {p: k for k, p in enumerate(pair_ids)}
    remap = np.array([rank.get(str(v), -1) for v in values], dtype=np.int64)
    return pair_ids, remap[idx]


def build(
    table: pa.Table,
    key: Key | str,
    control: str | None = None,
    align: Literal["end", "marker", "anchor"] = "end",
) -> PairGrid | None:
    """The grid of one identity; `key` may be a direction (then: the main metric, resid_pre, no
    head, window 1, `control`). None if it has no rows; ValueError if two rows share a cell."""
    if isinstance(key, str):
        key = Key(key, control=control)
    sub = select(table, key)
    column = ALIGN_COLUMN[align]
    sub = sub.filter(pc.is_valid(sub[column]))
    if sub.num_rows == 0:
        return None
    pair_ids, pi = _pair_index(sub["pair_id"])
    layer = sub["layer"].to_numpy().astype(int)
    pos = sub[column].to_numpy().astype(int)
    layers, li = np.unique(layer, return_inverse=True)
    positions, qi = np.unique(pos, return_inverse=True)
    flat = np.ravel_multi_index((pi, li, qi), (len(pair_ids), len(layers), len(positions)))
    if len(np.unique(flat)) != len(flat):
        raise ValueError(
            f"{key}: {len(flat) - len(np.unique(flat))} row(s) repeat a (pair, layer, position) "
            "cell of another row; the rows hold an identity column this grid does not key on"
        )
    patched = np.full((len(pair_ids), len(layers), len(positions)), np.nan)
    patched[pi, li, qi] = sub["patched"].to_numpy(zero_copy_only=False).astype(float)
    clean = np.zeros(len(pair_ids))
    corrupted = np.zeros(len(pair_ids))
    clean[pi] = sub["clean"].to_numpy(zero_copy_only=False).astype(float)
    corrupted[pi] = sub["corrupted"].to_numpy(zero_copy_only=False).astype(float)
    step = np.zeros(len(pair_ids))
    if "resolution" in sub.column_names:
        res = sub["resolution"].to_numpy(zero_copy_only=False).astype(float)
        np.fmax.at(step, pi, np.nan_to_num(res, nan=0.0))
    return PairGrid(
        pair_ids,
        [int(v) for v in layers],
        [int(v) for v in positions],
        clean,
        corrupted,
        patched,
        key,
        align,
        step,
    )

"""The grids the heatmaps show: one per identity, columns aligned on the template anchors.

Pairs differ in length before and after the marker, so a column counted from the end holds the
marker for some pairs and a claim word for others. Here a column is a template anchor and an
offset from it (the row's `anchor` and `anchor_offset`, hallu/store/schema.py): start (BOS), the
first user token, the marker, the end of the user's text and the last prompt token. Around the
marker the offset is `position_from_marker`; every anchor lines up across pairs, and positions
between anchors line up on the nearer one. Runs stored before the anchor columns existed fall back
to counting from the end, and say so.

One grid per identity (hallu/analysis/grid.py `keys`: direction, metric, component, head, window,
control), so no row lands in another identity's grid. Each grid has the ratio-of-means restoration
per cell and the max-T sign-flip test (hallu/analysis/permutation.py) on the same aligned cells.
Each column is labelled with what every pair has there: the shared token, or "(varies)", and
how many pairs have the column when not all do.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hallu.analysis import bootstrap, permutation
from hallu.analysis.directions import EXPECTED_SIGN
from hallu.analysis.grid import Key, PairGrid, build, keys, select

ANCHORS = ("start", "user", "marker", "user_end", "last")  # prompt order (store/schema.py)
ANCHOR_COLUMN = "anchor_position"  # the derived column: anchor rank x STRIDE + offset
STRIDE = 1_000_000


@dataclass
class CellMap:
    key: Key
    grid: PairGrid
    labels: list[str]  # one per column: where it is and which token every pair has there
    estimate: np.ndarray  # [n_layers, n_columns] ratio-of-means restoration
    p_adj: np.ndarray | None  # max-T adjusted p-values, None when not tested
    alpha: float = 0.05
    align: str = "anchor"  # "anchor", or "end" for runs without anchor columns
    quantity: str = "restoration"  # or "change": patched - corrupted in metric units, where
    # the source has no metric of its own (the norm_matched control)

    @property
    def n_pairs(self) -> int:
        return len(self.grid.pair_ids)

    @property
    def significant(self) -> np.ndarray:
        if self.p_adj is None:
            return np.zeros(self.estimate.shape, bool)
        return self.p_adj < self.alpha


def with_anchor_positions(table: pa.Table) -> tuple[pa.Table, str]:
    """The table with the anchor-aligned column added, and the alignment to build grids with."""
    if "anchor" not in table.column_names or table["anchor"].null_count == table.num_rows:
        return table, "end"
    # Vectorised (no Python object per row): the anchor's rank through its dictionary codes.
    anchor = table["anchor"]
    if not pa.types.is_dictionary(anchor.type):
        anchor = pc.dictionary_encode(anchor)
    anchor = anchor.combine_chunks()
    rank = np.array([ANCHORS.index(a) for a in anchor.dictionary.to_pylist()] + [0], np.int64)
    idx = pc.fill_null(anchor.indices, len(rank) - 1).to_numpy().astype(np.int64)
    offset = table["anchor_offset"].combine_chunks()
    code = rank[idx] * STRIDE + pc.fill_null(offset, 0).to_numpy().astype(np.int64)
    missing = pc.or_(pc.is_null(anchor), pc.is_null(offset)).to_numpy(zero_copy_only=False)
    column = pa.array(code, pa.int64(), mask=missing)
    return table.append_column(ANCHOR_COLUMN, column), "anchor"


def column_name(code: int, align: str) -> str:
    """'marker', 'marker+2', 'user_end-1' (anchor alignment) or '-3' (from the end)."""
    if align == "end":
        return str(code)
    rank = (code + STRIDE // 2) // STRIDE  # offsets are far smaller than STRIDE / 2
    anchor, offset = ANCHORS[rank], code - rank * STRIDE
    return anchor if offset == 0 else f"{anchor}{offset:+d}"


def tick_labels(rows: pa.Table, grid: PairGrid, column: str) -> list[str]:
    """Each column's name and the token every pair has there, '(varies)' when pairs differ,
    and 'k/N' when only k of the N pairs have the column."""
    first = rows.filter(pc.equal(rows["layer"], grid.layers[0]))
    seen: dict[int, dict[str, str]] = {}
    for p, pid, tok in zip(
        *(first[c].to_pylist() for c in (column, "pair_id", "token")), strict=True
    ):
        if p is not None:
            seen.setdefault(int(p), {})[pid] = tok
    out = []
    for code in grid.positions:
        toks = Counter(seen.get(code, {}).values()).most_common()
        name = column_name(code, grid.align)
        text = f"{name} {toks[0][0]!r}" if len(toks) == 1 else f"{name} (varies)"
        have = len(seen.get(code, {}))
        if have < len(grid.pair_ids):
            text += f" {have}/{len(grid.pair_ids)}"
        out.append(text)
    return out


def _estimate(grid: PairGrid) -> np.ndarray:
    """Ratio of means per cell over the pairs that have it."""
    present = np.isfinite(grid.patched)
    num = np.where(present, grid.patched - grid.corrupted[:, None, None], 0.0).sum(0)
    den = (present * grid.gap[:, None, None]).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / den, np.nan)


def cell_map(
    table: pa.Table, key: Key, align: str, n_perm: int | None, seed: int = 0, alpha: float = 0.05
) -> CellMap | None:
    """One identity's aligned grid; `table` from `with_anchor_positions`."""
    grid = build(table, key, align=align)  # type: ignore[arg-type]
    if grid is None:
        return None
    column = ANCHOR_COLUMN if align == "anchor" else "position_from_end"
    labels = tick_labels(select(table, key), grid, column)
    toward, est, quantity = grid.gap, _estimate(grid), "restoration"
    if not np.isfinite(grid.gap).any():  # no source metric: the raw change, signed the way
        toward = np.full(len(grid.pair_ids), EXPECTED_SIGN.get(key.direction, 1.0))  # hoped
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a cell no pair has: NaN
            est = np.nanmean(grid.patched - grid.corrupted[:, None, None], axis=0)
        quantity = "change"
    p = None
    if n_perm and len(grid.pair_ids) > 1:
        _, p = permutation.grid_test(grid.patched, grid.corrupted, toward, n_perm, seed)
    return CellMap(key, grid, labels, est, p, alpha, align, quantity)


def maps(
    table: pa.Table,
    n_perm: int | None = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    controls: bool = True,
) -> list[CellMap]:
    """Every identity's map, in grid.keys order; `controls` False leaves the controls out."""
    table, align = with_anchor_positions(table)
    out = []
    for key in keys(table):
        if key.control is not None and not controls:
            continue
        m = cell_map(table, key, align, n_perm, seed, alpha)
        if m is not None:
            out.append(m)
    return out


def describe_key(key: Key) -> str:
    """The identity in words, for titles: direction, component (head, window), metric, control."""
    part = key.component + (f" head {key.head}" if key.head is not None else "")
    if key.window != 1:
        part += f", {key.window}-layer window"
    text = f"{part}; metric {key.metric}"
    return text + (f"; control {key.control}" if key.control else "")


@dataclass(frozen=True)
class StrongCell:
    layer: int
    label: str  # the column's tick label
    estimate: float  # ratio-of-means restoration, every pair of the map
    lo: float  # bootstrap interval over pairs (NaN where no resample has the cell)
    hi: float
    p_adj: float | None  # max-T adjusted p-value


def strongest(
    m: CellMap, n_boot: int, seed: int, level: float = 0.95, top: int = 5
) -> list[StrongCell]:
    """The `top` cells of a map by restoration, each with a bootstrap interval over pairs."""
    w = bootstrap.resample_weights(len(m.grid.pair_ids), n_boot, seed)
    ci = bootstrap.cells(m.grid, w, level, keep_samples=False)
    est = np.nan_to_num(m.estimate, nan=-np.inf)
    out = []
    for k in np.argsort(est, axis=None)[::-1][:top]:
        i, j = np.unravel_index(k, est.shape)
        if np.isfinite(est[i, j]):
            p = None if m.p_adj is None else float(m.p_adj[i, j])
            cell = StrongCell(m.grid.layers[i], m.labels[j], float(m.estimate[i, j]),
                              float(ci.lo[i, j]), float(ci.hi[i, j]), p)  # fmt: skip
            out.append(cell)
    return out

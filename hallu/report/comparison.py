"""`--compare RUN_B`: run A against run B, with difference maps by relative depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hallu.analysis.compare import compare
from hallu.analysis.directions import SHORT
from hallu.analysis.results import Options, Results
from hallu.errors import UserError
from hallu.report.doc import Doc
from hallu.report.sections import analyse_run
from hallu.store.reader import Run


@dataclass
class Side:
    """One of the two runs: its label (A or B), layer count and analysis."""

    label: str
    n_layers: int
    stats: Results


def _direction(doc: Doc, d: str, a: Side, b: Side, opts: Options, number: int) -> tuple[list, int]:
    """Figures and the table row of direction d; returns the row and the next figure number."""
    from hallu.report import figures as figs

    sa, sb = a.stats.directions[d], b.stats.directions[d]
    diff = compare(sa, a.n_layers, sb, b.n_layers, opts.level, opts.seed)
    doc.figure(
        figs.difference_map(
            diff.estimate,
            diff.significant,
            [str(p) for p in diff.positions],
            diff.bins,
            f"{figs.TITLES[d]}\nrestoration A - B"
            + (" (paired: same pairs)" if diff.paired else " (independent resamples)"),
        ),
        f"Figure {number}: difference map, {SHORT[d]}",
    )
    number += 1
    series = []
    for side in (a, b):
        s = side.stats.directions[d]
        if s.curve is not None:
            depth = np.array(s.grid.layers) / max(1, side.n_layers - 1)
            series.append((f"{side.label} ({len(s.check.used)} pairs used)", depth, *s.curve))
    if series:
        doc.figure(
            figs.compare_curves(series, figs.TITLES[d]),
            f"Figure {number}: per-layer curves by relative depth, {SHORT[d]}",
        )
        number += 1
    row = [
        SHORT[d],
        sa.headline.fmt() if sa.headline else "n/a",
        sb.headline.fmt() if sb.headline else "n/a",
        diff.headline.fmt() if diff.headline else "n/a",
        int(diff.significant.sum()),
        sa.gap_flag or "above floor",
        sb.gap_flag or "above floor",
    ]
    return row, number


def _nothing_shared(a: Side, b: Side) -> str:
    """Why no direction can be compared: absent from a run, or no pair passes its gap check."""
    found = []
    for side in (a, b):
        for d, r in side.stats.directions.items():
            if r is not None:
                used, every = len(r.check.used), len(r.grid.pair_ids)
                found.append(f"run {side.label} {SHORT[d]}: {used} of {every} pairs used")
    if not found:
        return "neither run has patching rows of a direction; run +sweep=debug or +sweep=full first"
    return (
        "no direction has pairs that pass the gap check in both runs ("
        + "; ".join(found)
        + "); rerun the run that uses 0 pairs with more pairs (sweep.pairs=N) or another metric"
    )


def compare_report(a: Run, b: Run, opts: Options) -> Doc:
    """The comparison document of run A against run B."""
    ra, rb = analyse_run(a, opts), analyse_run(b, opts)
    na, nb = ra.n_layers, rb.n_layers
    side_a, side_b = Side("A", na, ra), Side("B", nb, rb)
    doc = Doc(f"hallu comparison: {a.run_id} (A) - {b.run_id} (B)")
    doc.p(
        f"A: {a.meta.get('config', {}).get('model', {}).get('name_or_path')} ({na} layers); "
        f"B: {b.meta.get('config', {}).get('model', {}).get('name_or_path')} ({nb} layers). "
        "Layers are compared by relative depth (layer / (n_layers - 1)) in "
        f"{min(na, nb)} bins. Dots mark cells whose 95% bootstrap interval of A - B excludes 0."
    )
    rows = []
    number = 1
    for d in side_a.stats.directions:
        both = (side_a.stats.directions[d], side_b.stats.directions.get(d))
        if all(s is not None and s.cells is not None for s in both):
            row, number = _direction(doc, d, side_a, side_b, opts, number)
            rows.append(row)
    if not rows:
        raise UserError(f"--compare: {_nothing_shared(side_a, side_b)}")
    doc.h("Headline band means")
    doc.table(
        ["dir", "A [95%]", "B [95%]", "A - B [95%]", "cells differing", "A noise", "B noise"],
        rows,
    )
    return doc

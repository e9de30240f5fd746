"""`analyse`: the one function from a run's stored rows to every number any output prints.

The patching rows, the behaviour rows and the noise floor go in; one `results.Results` comes out,
scorecard included. The terminal, summary.md/summary.json, the report, the multirun report and
scorecard.json format it and compute nothing of their own, so no two of them can disagree.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hallu.analysis import behavior_check, behavior_rates, cell_maps, patching, scorecard
from hallu.analysis.directions import DIRECTION_NAMES
from hallu.analysis.grid import keys
from hallu.analysis.results import Behaviour, NoiseFloor, Options, Results


def noise_floor(record: dict[str, Any] | None) -> NoiseFloor:
    """The run's one noise floor from noise_floor.json (None: not measured)."""
    if not record or record.get("gap_floor") is None:
        return NoiseFloor(None, record or None)
    return NoiseFloor(float(record["gap_floor"]), record)


def behaviour(beh: pa.Table | None, table: pa.Table | None, opts: Options) -> Behaviour:
    """Experiment 1's numbers; `table` (the patching rows) lends baselines to the tracking check
    when answers carry no metric of their own."""
    if beh is None:
        return Behaviour(False, False)
    n_pairs = len(set(beh["pair_id"].to_pylist())) if "pair_id" in beh.column_names else 0
    if behavior_check.label_column(beh) is None:
        return Behaviour(True, False, n_pairs=n_pairs)
    answers, which = behavior_check.answers(beh)
    n, seed = opts.n_boot, opts.seed
    rates = behavior_rates.prompt_rates(beh, n, seed)
    # Without patching rows, only answers that carry their own metric can be scored.
    can_track = table is not None or "metric_value" in answers.column_names
    return Behaviour(
        True,
        True,
        which,
        n_pairs,
        behavior_check.asymmetry(answers, opts.level),
        behavior_check.metric_tracking(answers, table, n, seed) if can_track else None,
        rates,
        behavior_rates.rate_line(rates, which),
        behavior_rates.figure_data(beh, n, seed),
        behavior_rates.tracking(beh, n, seed),
    )


def analyse(
    table: pa.Table | None,
    n_layers: int,
    noise: dict[str, Any] | None = None,
    behavior: pa.Table | None = None,
    opts: Options | None = None,
) -> Results:
    """Every number of one run (hallu/analysis/results.py says which), and its scorecard.

    `table`: the patching rows (None for a behaviour-only run); `noise`: noise_floor.json (None:
    not measured); `behavior`: the behaviour rows (None: not run)."""
    opts = opts or Options()
    floor = noise_floor(noise)
    per = {}
    for d in DIRECTION_NAMES if table is not None else ():
        r = patching.direction_result(table, d, n_layers, floor.gap_floor, opts)
        if r is not None:
            patching.add_controls(table, r, opts)
            r.premise = patching.premise(r, opts)
            per[d] = r
    out = Results(opts, n_layers, floor, per, behaviour(behavior, table, opts))
    if table is not None and not per:
        out.other_rows = sorted({cell_maps.describe_key(k) for k in keys(table)})
    patching.add_difference(out, opts)
    patching.add_locus_shifts(out, opts)
    out.card = scorecard.build(out)
    return out

"""Turn a run's shards into figures and a summary: what the source study's Figures 2-3 showed,
and more.

Every number here is `hallu.analysis.pipeline.analyse`'s (hallu/analysis/results.py), as every
output prints it; this module only formats and draws.
Heatmaps: one per identity (direction, metric, component, head, window; controls are in the
report), columns aligned on the template anchors and the marker, each tick naming the token
every pair has there (hallu/analysis/cell_maps.py), dots where the max-T test on the same columns
finds an effect. Per direction, descriptive numbers over every pair of the main identity
(logit_diff, resid_pre): the baselines and the band mean at the last position (upper half of the
layers, the source study's "layers 20-39" of 40), as mean of per-pair ratios and ratio of means;
and the report's per-layer curve at the last position over the pairs used (layers.png).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hallu.analysis import cell_maps, scorecard  # noqa: E402
from hallu.analysis.cell_maps import CellMap  # noqa: E402
from hallu.analysis.grid import MAIN_METRIC, Key  # noqa: E402
from hallu.analysis.pipeline import analyse  # noqa: E402
from hallu.analysis.results import DirectionResult, Options, Results  # noqa: E402
from hallu.report import figures, rehearsal  # noqa: E402
from hallu.report.figures import COMPONENTS, TITLES  # noqa: E402
from hallu.store.base import Store  # noqa: E402
from hallu.store.verify import read_narrow  # noqa: E402

TITLES_ORDER = tuple(TITLES)


def map_file(key: Key) -> str:
    """heatmap_<direction>.png for the main identity; the others name what differs."""
    name = f"heatmap_{key.direction}"
    if key.metric != MAIN_METRIC or key.component != "resid_pre":
        name += f"_{key.metric}_{key.component}"
    if key.head is not None:
        name += f"_head{key.head}"
    if key.window != 1:
        name += f"_window{key.window}"
    if key.control is not None:
        name += f"_control_{key.control}"
    return name + ".png"


def order(m: CellMap) -> tuple:
    """2A before 2B, the main metric and the experiment first, then heads and windows."""
    k = m.key
    return (
        k.control is not None,
        TITLES_ORDER.index(k.direction) if k.direction in TITLES_ORDER else 9,
        k.metric != MAIN_METRIC,
        k.component,
        -1 if k.head is None else k.head,
        k.window,
        k.control or "",
    )


def _top_cells(m: CellMap, n: int = 5) -> list[dict[str, Any]]:
    est = np.nan_to_num(m.estimate, nan=-np.inf)
    out = []
    for k in np.argsort(est, axis=None)[::-1][:n]:
        i, j = np.unravel_index(k, est.shape)
        if np.isfinite(est[i, j]):
            out.append(
                {
                    "layer": m.grid.layers[i],
                    "column": m.labels[j],
                    "mean_restoration": round(float(m.estimate[i, j]), 6),
                }
            )
    return out


def describe_map(m: CellMap) -> dict[str, Any]:
    """One heatmap's numbers for summary.json: its identity, columns, grid and strongest cells."""
    return {
        "key": asdict(m.key),
        "file": map_file(m.key),
        "alignment": m.align,
        "n_pairs": m.n_pairs,
        "layers": m.grid.layers,
        "columns": m.labels,
        "mean_restoration": [
            [None if np.isnan(v) else round(float(v), 6) for v in row] for row in m.estimate
        ],
        "n_significant": int(m.significant.sum()),
        "top_cells": _top_cells(m),
    }


def summarize_direction(d: DirectionResult, m: CellMap | None) -> dict[str, Any]:
    """Descriptive numbers of one direction's main identity over every pair: baselines, the
    band mean at the last position both ways, and its anchor-aligned map."""
    out: dict[str, Any] = {
        **d.baselines(),
        "component": d.grid.key.component if d.grid.key else "resid_pre",
        "headline": None,
        **({k: v for k, v in describe_map(m).items() if k != "n_pairs"} if m else {}),
    }
    if d.all_pairs is not None:
        out["headline"] = {
            "definition": f"restoration at the last position, mean over layers {d.band[0]}-"
            f"{d.band[-1]} and over every pair",
            "band_layers": d.band,
            "mean_of_ratios": d.all_pairs_mor.estimate if d.all_pairs_mor else None,
            "ratio_of_means": d.all_pairs.estimate,
        }
    return out


def _layer_curve(res: Results, path: str) -> None:
    """The report's per-layer curve: restoration at the last position over the pairs used, with
    its 95% bootstrap band, per direction."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for d in res.directions.values():
        if d.curve is None:
            continue
        est, lo, hi = d.curve
        label = f"{TITLES.get(d.direction, d.direction).split(':')[0]} ({len(d.check.used)} pairs)"
        (line,) = ax.plot(d.grid.layers, est, marker="o", ms=3, label=label)
        ax.fill_between(d.grid.layers, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls="--")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_title(
        f"Restoration at the last prompt token by layer\nresid_pre patched, metric {MAIN_METRIC}, "
        "pairs used;\nratio of means with its 95% bootstrap band",
        fontsize=9,
    )
    ax.set_xlabel(f"layer (0-based): {COMPONENTS['resid_pre']}")
    ax.set_ylabel("restoration\n(fraction of the clean - corrupted gap)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:  # no direction has a pair that passed the gap check: say so on the figure
        ax.text(0.5, 0.5, "no pair passed the gap check:\nno curve to draw",
                transform=ax.transAxes, ha="center", va="center", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _direction_lines(s: dict[str, Any]) -> list[str]:
    lines = [
        f"- pairs: {s['n_pairs']} ({s['n_pairs_used']} pass the gap check), cells: "
        f"{s['n_cells']}, pairs with clean == corrupted: "
        f"{s['pairs_with_zero_gap']}",
        f"- metric baselines: clean {s['clean_mean']:.4f}, corrupted {s['corrupted_mean']:.4f}, "
        f"gap {s['gap_mean']:.4f} (smallest |gap| of a pair {s['gap_min_abs']:.2e})",
    ]
    h = s["headline"]
    if h:
        mor = "n/a" if h["mean_of_ratios"] is None else f"{h['mean_of_ratios']:.4f}"
        lines.append(
            f"- band mean over all pairs, descriptive ({h['definition']}): mean of "
            f"per-pair ratios {mor}; ratio of means {h['ratio_of_means']:.4f}"
        )
    else:
        lines.append("- band mean: not computed (the last position was not swept)")
    return lines


def _map_lines(m: dict[str, Any]) -> list[str]:
    k = m["key"]
    what = COMPONENTS.get(k["component"], k["component"])
    if k["head"] is not None:
        what += f", head {k['head']}"
    cells = ", ".join(
        f"layer {t['layer']} at {t['column']}: {t['mean_restoration']:.3f}" for t in m["top_cells"]
    )
    return [
        f"- figure {m['file']}: {what} ({k['component']}) copied from the source run into the "
        f"target run at each layer (rows) and each token position (columns, aligned on the "
        f"template anchors and the marker; {m['alignment']}); metric {k['metric']}; colour: "
        f"ratio-of-means restoration over {m['n_pairs']} pairs; {m['n_significant']} cells "
        "significant under the max-T test (family-wise 5%)",
        f"  - strongest cells: {cells}",
    ]


def _markdown(
    run_id: str,
    summaries: dict[str, dict[str, Any]],
    maps: list[dict[str, Any]],
    headline: list[str],
    noise: str = "",
) -> str:
    lines = [
        f"# hallu run {run_id}",
        "",
        "## Headline (hallu/analysis/pipeline.py; the report prints the same)",
        "",
        *[f"- {line}" for line in headline],
        "",
        f"This run's {noise}." if noise else "",
        "",
        "The sections below are descriptive: means over every pair, including pairs the headline "
        "excludes. Restoration = (patched - corrupted) / (clean - corrupted); 1 = the patch "
        "carries the whole difference between the two prompts, 0 = none.",
        "",
    ]
    for direction, s in summaries.items():
        lines += [f"## {TITLES.get(direction, direction)}", "", *_direction_lines(s), ""]
    lines += ["## Heatmaps, one per identity", ""]
    for m in maps:
        lines += _map_lines(m)
    lines += [
        "",
        "Figure layers.png: restoration at the last prompt token by layer, one line per "
        "direction (main metric, resid_pre; ratio of means over the pairs that pass the gap "
        "check, 95% bootstrap band; the report's curve). Verdicts: the report "
        "(python -m hallu.report RUN_DIR).",
        "",
    ]
    return "\n".join(lines)


def _noise(store: Store) -> dict[str, Any] | None:
    raw = store.read_file("noise_floor.json")
    return json.loads(raw) if raw else None


def pipeline(
    table: pa.Table, n_layers: int, noise: dict[str, Any] | None, analysis: dict[str, Any] | None
) -> tuple[Results, list[str]]:
    """The one analysis with the terminal's options (`analysis`: the run's config section), and
    the lines every output prints."""
    res = analyse(table, n_layers, noise, None, Options().configured(analysis))
    return res, scorecard.headline_lines(res)


def aggregate(
    store: Store, n_layers: int, analysis: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read every shard, write figures and summaries into the run directory, return the summary.
    `analysis`: the run's `analysis` config section (None: the defaults)."""
    table, _ = read_narrow(store)  # the planned shards only, each checked; narrow columns
    res, headline = pipeline(table, n_layers, _noise(store), analysis)
    if rehearsal.is_rehearsal(store.read_meta()):
        headline = [rehearsal.NOTE]  # random weights: no verdict lines
    maps = sorted(cell_maps.maps(table, controls=False), key=order)  # controls: the report
    main = {m.key.direction: m for m in maps if m.key == Key(m.key.direction)}
    summaries = {d: summarize_direction(r, main.get(d)) for d, r in res.directions.items()}
    # Render into a local temp dir, then hand each file to the store (a directory or S3).
    with tempfile.TemporaryDirectory(prefix="hallu-fig-") as tmp:
        for m in maps:
            Path(tmp, map_file(m.key)).write_bytes(figures.heatmap(m))
        if res.directions:
            _layer_curve(res, os.path.join(tmp, "layers.png"))
        for name in sorted(os.listdir(tmp)):
            store.write_file(name, Path(tmp, name).read_bytes())
    described = [describe_map(m) for m in maps]
    summary = {
        "run_id": store.run_id,
        "n_layers": n_layers,
        "headline_lines": headline,
        "noise_floor": res.noise.gap_floor,  # None: not measured
        "directions": summaries,
        "maps": described,
    }
    store.write_file("summary.json", json.dumps(summary, indent=2).encode())
    text = _markdown(store.run_id, summaries, described, headline, res.noise.describe())
    store.write_file("summary.md", text.encode())
    return summary

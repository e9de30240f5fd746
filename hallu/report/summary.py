"""Turn a run's shards into figures and a summary: what the source study's Figures 2-3 showed,
and more.

Per direction: a heatmap of mean restoration over pairs (layer x position counted from the end,
so pairs of different lengths line up on the chat template's final tokens), a per-layer curve at
the last position, and the headline number, defined as the *band mean*: restoration at the last
position averaged over the upper half of the layers (the source study's "layers 20-39" of 40)
and over pairs. It is given two ways, mean of per-pair ratios and ratio of mean metrics, beside the
baseline gap (clean - corrupted) that every ratio divides by: a small gap makes a ratio noise.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hallu.analysis import results, verdicts  # noqa: E402
from hallu.store.base import Store  # noqa: E402
from hallu.store.verify import read_narrow  # noqa: E402

TITLES = {
    "restore_confidence": "2A restore confidence: certain -> uncertain run",
    "induce_tentativeness": "2B induce tentativeness: uncertain -> certain run",
}


# Where each component's patch is written, for axis labels and captions.
COMPONENTS = {
    "resid_pre": "residual stream entering the layer",
    "attn_out": "attention output of the layer",
    "mlp_out": "MLP output of the layer",
    "head": "one attention head's output",
}


def _columns(table: pa.Table, direction: str) -> dict[str, np.ndarray]:
    sub = table.filter(pa.compute.equal(table["direction"], direction))
    if sub.num_rows and "metric" in sub.column_names:  # the configured metric, not the extras
        sub = sub.filter(pa.compute.equal(sub["metric"], sub["metric"][0]))
    names = [
        "layer",
        "position_from_end",
        "pair_id",
        "token",
        "clean",
        "corrupted",
        "patched",
        "restoration",
    ]
    return {
        n: np.asarray(sub[n].to_pylist(), dtype=object if n in ("pair_id", "token") else float)
        for n in names
    }


def summarize_direction(c: dict[str, np.ndarray], n_layers: int) -> dict[str, Any]:
    layers = sorted({int(v) for v in c["layer"]})
    pfes = sorted({int(v) for v in c["position_from_end"]})
    grid = np.full((len(layers), len(pfes)), np.nan)
    for i, layer in enumerate(layers):
        for j, p in enumerate(pfes):
            sel = (c["layer"] == layer) & (c["position_from_end"] == p)
            vals = c["restoration"][sel]
            if np.isfinite(vals).any():
                grid[i, j] = np.nanmean(vals)
    # Baselines: one value per pair.
    _, first = np.unique(c["pair_id"], return_index=True)
    clean, corrupted = c["clean"][first], c["corrupted"][first]
    gap = clean - corrupted
    out: dict[str, Any] = {
        "n_pairs": int(len(first)),
        "n_rows": int(len(c["layer"])),
        "rows_with_nan_restoration": int(np.isnan(c["restoration"]).sum()),
        "clean_mean": float(clean.mean()),
        "corrupted_mean": float(corrupted.mean()),
        "gap_mean": float(gap.mean()),
        "gap_min_abs": float(np.abs(gap).min()),
        "layers": layers,
        "positions_from_end": pfes,
        "mean_restoration": [
            [None if np.isnan(v) else round(float(v), 6) for v in row] for row in grid
        ],
    }
    band = [layer for layer in layers if layer >= n_layers // 2]
    last = c["position_from_end"] == -1
    in_band = np.isin(c["layer"].astype(int), band) & last
    if in_band.any():
        patched_mean = c["patched"][in_band].mean()
        out["headline"] = {
            "definition": f"restoration at the last position, mean over layers {band[0]}-"
            f"{band[-1]} (upper half of {n_layers}) and over pairs",
            "band_layers": band,
            "mean_of_ratios": float(np.nanmean(c["restoration"][in_band])),
            "ratio_of_means": float((patched_mean - corrupted.mean()) / gap.mean())
            if gap.mean() != 0
            else None,
        }
    else:
        out["headline"] = None
    order = np.argsort(np.nan_to_num(grid, nan=-np.inf), axis=None)[::-1][:5]
    out["top_cells"] = [
        {"layer": layers[i], "position_from_end": pfes[j], "mean_restoration": float(grid[i, j])}
        for i, j in (np.unravel_index(k, grid.shape) for k in order)
        if np.isfinite(grid[i, j])
    ]
    return out


def _token_labels(c: dict[str, np.ndarray], pfes: list[int]) -> list[str]:
    # Label with the longest pair's tokens, so that every column has one.
    first_pair = c["pair_id"][int(np.argmin(c["position_from_end"]))]
    labels = []
    for p in pfes:
        sel = (c["pair_id"] == first_pair) & (c["position_from_end"] == p)
        labels.append(f"{p} {c['token'][sel][0]}" if sel.any() else str(p))
    return labels


def _heatmap(summary: dict[str, Any], c: dict[str, np.ndarray], direction: str, path: str) -> None:
    grid = np.array(
        [[np.nan if v is None else v for v in row] for row in summary["mean_restoration"]],
        dtype=float,
    )
    pfes, layers = summary["positions_from_end"], summary["layers"]
    lim = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(pfes) + 2), max(3, 0.3 * len(layers) + 1.5)))
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(pfes)), _token_labels(c, pfes), rotation=90, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("position from end, with the first pair's target token")
    ax.set_ylabel(f"layer ({summary['component']})")
    ax.set_title(
        f"{TITLES.get(direction, direction)}\n{summary['component']} patched; mean restoration "
        f"over {summary['n_pairs']} pairs",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="restoration (share of gap)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer_curve(
    cols: dict[str, dict[str, np.ndarray]], summaries: dict[str, dict[str, Any]], path: str
) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for direction, c in cols.items():
        last = c["position_from_end"] == -1
        if not last.any():
            continue
        layers = sorted({int(v) for v in c["layer"][last]})
        means, errs = [], []
        for layer in layers:
            v = c["restoration"][last & (c["layer"] == layer)]
            v = v[np.isfinite(v)]
            means.append(v.mean() if len(v) else np.nan)
            errs.append(v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0)
        ax.errorbar(
            layers,
            means,
            yerr=errs,
            marker="o",
            ms=3,
            capsize=2,
            label=TITLES.get(direction, direction).split(":")[0],
        )
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls="--")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    first = next(iter(summaries.values()), {"component": "?", "n_pairs": 0})
    ax.set_title(
        f"Restoration at the last position by layer ({first['component']} patched, "
        f"{first['n_pairs']} pairs)",
        fontsize=9,
    )
    ax.set_xlabel(f"layer ({COMPONENTS.get(first['component'], first['component'])})")
    ax.set_ylabel("restoration (fraction of the gap)\nmean +- s.e. over pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(
    run_id: str, n_layers: int, summaries: dict[str, dict[str, Any]], headline: list[str]
) -> str:
    lines = [
        f"# hallu run {run_id}",
        "",
        "## Headline (hallu/analysis/results.py; the report prints the same)",
        "",
        *[f"- {line}" for line in headline],
        "",
        "The per-direction sections below are descriptive: means over every pair, including "
        "pairs the headline excludes.",
        "",
        "Restoration = (patched - corrupted) / (clean - corrupted); 1 = the patch carries "
        "the whole difference between the two prompts, 0 = none.",
        "",
    ]
    for direction, s in summaries.items():
        lines += [
            f"## {TITLES.get(direction, direction)}",
            "",
            f"- pairs: {s['n_pairs']}, rows: {s['n_rows']}, rows with undefined "
            f"restoration (clean == corrupted): {s['rows_with_nan_restoration']}",
            f"- metric baselines: clean {s['clean_mean']:.4f}, corrupted "
            f"{s['corrupted_mean']:.4f}, gap {s['gap_mean']:.4f} (smallest |gap| of a pair "
            f"{s['gap_min_abs']:.2e})",
        ]
        h = s["headline"]
        if h:
            rom = "n/a" if h["ratio_of_means"] is None else f"{h['ratio_of_means']:.4f}"
            lines.append(
                f"- band mean over all pairs, descriptive ({h['definition']}): mean of "
                f"per-pair ratios {h['mean_of_ratios']:.4f}; ratio of means {rom}"
            )
        else:
            lines.append("- headline: not computed (the last position was not swept)")
        lines.append(
            "- strongest cells: "
            + ", ".join(
                f"layer {t['layer']} pos {t['position_from_end']}: {t['mean_restoration']:.3f}"
                for t in s["top_cells"]
            )
        )
        lines.append(
            f"- figure heatmap_{direction}.png: {COMPONENTS.get(s['component'], s['component'])}"
            f" ({s['component']}) copied from the source run into the target run at each layer "
            "(rows) and each position counted from the end (columns); colour: restoration, the "
            f"patched metric's share of the baseline gap, mean over {s['n_pairs']} pairs"
        )
        lines.append("")
    lines += [
        "Figure layers.png: restoration at the last position by layer, one line per direction "
        "(mean +- standard error over pairs). No confidence intervals yet: "
        "treat differences between directions smaller than the baseline gap's spread as "
        "unresolved.",
        "",
    ]
    return "\n".join(lines)


def _noise(store: Store) -> dict[str, Any] | None:
    raw = store.read_file("noise_floor.json")
    return json.loads(raw) if raw else None


def pipeline(
    table: pa.Table,
    n_layers: int,
    noise: dict[str, Any] | None,
    margin: float,
    opts: Any = None,
) -> tuple[results.Results, list[str]]:
    """The one result pipeline's numbers, and the lines every output prints: each direction's
    headline, then the 2A vs 2B verdict. `opts`: the report's resampling options (n_boot, seed,
    band); the defaults are the terminal's."""
    floor = float(noise["gap_floor"]) if noise else None
    o = results.Options(equivalence_margin=margin)
    if opts is not None:
        o = results.Options(opts.n_boot, 0.95, opts.seed, opts.band, equivalence_margin=margin)
    res = results.compute(table, n_layers, floor, o)
    lines = results.headline_lines(res)
    lines += [f"{v.criterion}: {v.verdict}" for v in verdicts.patching(res)[:1]]
    return res, lines


def aggregate(store: Store, n_layers: int, margin: float = 0.05) -> dict[str, Any]:
    """Read every shard, write figures and summaries into the run directory, return the summary."""
    table, _ = read_narrow(store)  # the planned shards only, each checked; narrow columns
    _, headline = pipeline(table, n_layers, _noise(store), margin)
    table = table.filter(pa.compute.is_null(table["control"]))  # controls: report/sections.py
    directions = [d for d in TITLES if d in set(table["direction"].to_pylist())]
    cols = {d: _columns(table, d) for d in directions}
    summaries = {d: summarize_direction(cols[d], n_layers) for d in directions}
    component = table["component"][0].as_py() if table.num_rows else "?"
    for d in directions:  # what was patched, for the figures' titles and captions
        summaries[d]["component"] = component
    # Render into a local temp dir, then hand each file to the store (a directory or S3).
    with tempfile.TemporaryDirectory(prefix="hallu-fig-") as tmp:
        for d in directions:
            _heatmap(summaries[d], cols[d], d, os.path.join(tmp, f"heatmap_{d}.png"))
        _layer_curve(cols, summaries, os.path.join(tmp, "layers.png"))
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                store.write_file(name, f.read())
    summary = {
        "run_id": store.run_id,
        "n_layers": n_layers,
        "headline_lines": headline,
        "directions": summaries,
    }
    store.write_file("summary.json", json.dumps(summary, indent=2).encode())
    md = _markdown(store.run_id, n_layers, summaries, headline)
    store.write_file("summary.md", md.encode())
    return summary

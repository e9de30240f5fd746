"""The report's figures, each returned as PNG bytes (the report embeds them as base64).

Heatmaps mark cells significant under the max-T permutation test with a dot and, when the
direction's baseline gap is inside the noise floor, are hatched and say so in the title.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hallu.analysis.bootstrap import Interval  # noqa: E402
from hallu.analysis.cell_maps import CellMap, describe_key  # noqa: E402
from hallu.analysis.directions import SHORT  # noqa: E402
from hallu.analysis.results import ControlResult, DirectionResult, Results  # noqa: E402

TITLES = {
    "restore_confidence": "2A restore confidence: certain -> uncertain run",
    "induce_tentativeness": "2B induce tentativeness: uncertain -> certain run",
}

QUANTITY = {
    "restoration": "ratio-of-means restoration",
    "change": "mean change patched - corrupted",
}

# Where each component's patch is written, for axis labels and captions.
COMPONENTS = {
    "resid_pre": "residual stream entering the layer",
    "attn_out": "attention output of the layer",
    "mlp_out": "MLP output of the layer",
    "head": "one attention head's output",
}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _xerr(iv: Any) -> list[list[float]]:
    """Error bar lengths; a percentile interval need not contain its estimate, so clip at 0."""
    lo, hi = np.nan_to_num(iv.estimate - iv.lo), np.nan_to_num(iv.hi - iv.estimate)
    return [[max(0.0, float(lo))], [max(0.0, float(hi))]]


def _map_title(m: CellMap, number: int | None) -> str:
    d = m.key.direction
    head = f"Figure {number}: " if number is not None else ""
    return (
        f"{head}{TITLES.get(d, d)}\n{describe_key(m.key)}; {QUANTITY[m.quantity]} over "
        f"{m.n_pairs} pairs; dots: max-T p < {m.alpha:g} (family-wise)"
    )


def heatmap(m: CellMap, number: int | None = None, inside_floor: bool = False) -> bytes:
    """Restoration per layer and aligned column (hallu/analysis/cell_maps.py); dots mark cells
    significant under the max-T test on the same columns; hatched when the gap is noise."""
    g, grid = m.grid, m.estimate
    finite = grid[np.isfinite(grid)]
    lim = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    lim = min(lim, 3.0)  # a ratio with a tiny denominator must not wash out the scale
    fig, ax = plt.subplots(
        figsize=(max(7, 0.3 * len(g.positions) + 3), max(4.8, 0.25 * len(g.layers) + 3.6))
    )
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    sig = np.argwhere(m.significant)
    if len(sig):
        ax.scatter(sig[:, 1], sig[:, 0], s=8, c="k", marker="o", label=f"max-T p < {m.alpha:g}")
        ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    ax.set_xticks(range(len(g.positions)), m.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(g.layers)), [str(v) for v in g.layers], fontsize=7)
    if m.align == "anchor":
        where = "position: template anchor + offset, and the target token every pair has there"
    else:
        where = "token position counted from the end (-1 = last), and the target token"
    ax.set_xlabel(where + "\n('(varies)': pairs differ there; k/N: only k of N pairs have it)")
    ax.set_ylabel(f"layer (0-based) of {m.key.component}")
    title = _map_title(m, number)
    if inside_floor:
        ax.add_patch(
            plt.Rectangle((-0.5, -0.5), len(g.positions), len(g.layers), fill=False, hatch="//")
        )
        title += "\nBASELINE GAP INSIDE NOISE FLOOR: NOT A FINDING"
    ax.set_title(title, fontsize=8)
    unit = "fraction of gap" if m.quantity == "restoration" else f"{m.key.metric} units"
    fig.colorbar(im, ax=ax, label=f"{m.quantity} ({unit}, clipped to +-{lim:.1f})")
    return _png(fig)


def _drawn_controls(s: DirectionResult) -> list[ControlResult]:
    return [c for c in s.controls.values() if c.curve is not None]


def curves(res: Results, number: int | None = None) -> bytes:
    """Per-layer restoration at the last position over the used pairs (the locus's curve) with
    bootstrap bands; each control with a defined restoration toward its own source beside it."""
    dirs = [s for s in res.directions.values() if s.curve is not None]
    fig, axes = plt.subplots(1, max(1, len(dirs)), figsize=(5.2 * max(1, len(dirs)), 3.6))
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, dirs, strict=False):
        est, lo, hi = s.curve  # type: ignore[misc]
        shown = [est, lo, hi]
        ax.plot(s.grid.layers, est, "o-", ms=3, color="k", label="patch (real)")
        ax.fill_between(s.grid.layers, lo, hi, color="k", alpha=0.15)
        for c in _drawn_controls(s):
            ce, cl, ch = c.curve  # type: ignore[misc]
            shown += [ce, cl, ch]
            (line,) = ax.plot(s.grid.layers, ce, "--", lw=1, label=f"control: {c.name}")
            ax.fill_between(s.grid.layers, cl, ch, color=line.get_color(), alpha=0.1)
        b0, b1 = s.band[0], s.band[-1]
        ax.axvspan(b0 - 0.5, b1 + 0.5, color="gold", alpha=0.15, label="headline band")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls=":")
        values = np.concatenate([v[np.isfinite(v)] for v in shown] + [np.array([-0.2, 1.2])])
        ax.set_ylim(max(-3, values.min() - 0.05), min(3, values.max() + 0.05))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        note = " (gap inside noise floor)" if s.inside else ""
        ax.set_title(f"{TITLES[s.direction]}{note}\n{len(s.check.used)} pairs used", fontsize=9)
        ax.set_xlabel("layer (0-based) of resid_pre")
        ax.set_ylabel("restoration at the last token\n(fraction of gap; 95% bootstrap band)")
        ax.legend(fontsize=6)
    head = f"Figure {number}: " if number is not None else ""
    fig.suptitle(f"{head}restoration at the last prompt token by layer", fontsize=10)
    return _png(fig)


def headline_rows(res: Results) -> list[tuple[str, Interval]]:
    """The intervals the headline figure draws, each finite: patch, controls, 2A - 2B."""
    rows: list[tuple[str, Interval]] = []
    for s in res.directions.values():
        if s.headline is not None:
            rows.append((f"{SHORT[s.direction]} patch", s.headline))
        for c in s.controls.values():
            if c.toward_own is not None and np.isfinite(c.toward_own.estimate):
                rows.append((f"{SHORT[s.direction]} control {c.name}", c.toward_own))
    if res.difference is not None:
        rows.append(("2A - 2B (paired)", res.difference))
    return rows


def headlines(res: Results, number: int | None = None) -> bytes:
    """Band-mean restoration of each direction and control, and the 2A - 2B difference."""
    rows = headline_rows(res)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 0.35 * len(rows) + 1.8))
    for i, (_name, iv) in enumerate(rows):
        ax.errorbar([iv.estimate], [i], xerr=_xerr(iv), fmt="o")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.axvline(0, color="grey", lw=0.5)
    ax.axvline(1, color="grey", lw=0.5, ls=":")
    ax.invert_yaxis()
    ax.set_xlabel("band-mean restoration, fraction of gap\n(95% bootstrap interval)")
    ax.set_title("each direction, control and the paired difference", fontsize=9)
    if res.per_pair_values is not None:
        v = res.per_pair_values[np.isfinite(res.per_pair_values)]
        jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(v))
        bx.scatter(v, jitter, s=10, alpha=0.6)
        if res.per_pair_difference is not None:
            d = res.per_pair_difference
            bx.errorbar(
                [d.estimate],
                [0],
                xerr=_xerr(d),
                fmt="s",
                color="k",
                capsize=4,
                label="mean, 95% interval",
            )
            bx.legend(fontsize=7)
        bx.axvline(0, color="grey", lw=0.5)
        bx.set_yticks([])
        bx.set_xlabel("per pair: band-mean restoration 2A - 2B\n(fraction of gap)")
        bx.set_title(f"{len(v)} pairs, each a dot (vertical jitter only)", fontsize=9)
    else:
        bx.text(0.5, 0.5, "needs both directions", ha="center", transform=bx.transAxes)
        bx.set_axis_off()
    head = f"Figure {number}: " if number is not None else ""
    fig.suptitle(f"{head}band-mean restoration at the last prompt token", fontsize=10)
    return _png(fig)


def other_dtype_floors(res: Results) -> dict[str, float]:
    """The gap floor each other dtype would have had (2 x its distance from float32), from the
    measured record; empty when the floor was not measured."""
    rec = res.noise.record or {}
    return {
        dtype: 2 * v["precision_vs_float32"]["max"]
        for dtype, v in rec.get("per_dtype", {}).items()
        if dtype != rec.get("run_dtype") and "precision_vs_float32" in v
    }


def noise(res: Results, number: int | None = None) -> bytes:
    """Each pair's |baseline gap| (log scale) against the run's one noise floor when it was
    measured, and for reference the floor other dtypes would have had."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for i, s in enumerate(res.directions.values()):
        gaps = np.abs(s.grid.gap)
        gaps = np.where(gaps > 0, gaps, 1e-9)
        ax.scatter(gaps, np.full(len(gaps), i) + np.linspace(-0.2, 0.2, len(gaps)), s=10)
    ax.set_yticks(range(len(res.directions)), [SHORT[d] for d in res.directions])
    ax.set_xscale("log")
    if res.noise.gap_floor is not None:
        ax.axvline(max(res.noise.gap_floor, 1e-9), color="r", label="measured gap floor")
        for dtype, x in other_dtype_floors(res).items():
            ax.axvline(max(x, 1e-9), color="grey", ls="--", lw=0.8)
            ax.text(max(x, 1e-9), 0.5, f" {dtype}", fontsize=7, color="grey", rotation=90)
        ax.legend(fontsize=7)
    head = f"Figure {number}: " if number is not None else ""
    floor = "" if res.noise.measured else " (noise floor not measured)"
    ax.set_title(f"{head}each pair's baseline gap against the noise floor{floor}", fontsize=9)
    ax.set_xlabel("|clean - corrupted| per pair (logits, log scale)")
    ax.set_ylabel("direction")
    return _png(fig)


def difference_map(
    diff: np.ndarray, sig: np.ndarray, xlabels: list[str], ylabels: list[str], title: str
) -> bytes:
    lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    lim = min(max(lim, 0.1), 3.0)
    fig, ax = plt.subplots(
        figsize=(max(6, 0.32 * len(xlabels) + 2.5), max(3, 0.28 * len(ylabels) + 1.8))
    )
    im = ax.imshow(diff, aspect="auto", origin="lower", cmap="PuOr", vmin=-lim, vmax=lim)
    pts = np.argwhere(sig)
    if len(pts):
        ax.scatter(pts[:, 1], pts[:, 0], s=8, c="k", label="95% interval excludes 0")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_xlabel("token position counted from the end (-1 = last prompt token)")
    ax.set_ylabel("relative depth (layer / (n_layers - 1))")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="restoration A - B (fraction of gap)")
    return _png(fig)


def compare_curves(
    series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], title: str
) -> bytes:
    """series: (label, relative depth, estimate, lo, hi)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, x, est, lo, hi in series:
        (line,) = ax.plot(x, est, "o-", ms=3, label=label)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("relative depth (layer / (n_layers - 1))")
    ax.set_ylabel("restoration at the last token\n(fraction of gap; 95% band)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)

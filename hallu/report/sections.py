"""The report of one run, section by section.

`build_report` analyses the run once (hallu/analysis/run_stats.py) and hands the same `Context`
to each section in `SECTIONS`; a section only appends to the document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from hallu.analysis import behavior_check, cell_maps, results, scorecard, verdicts
from hallu.analysis.grid import MAIN_METRIC
from hallu.analysis.noise_flags import UNKNOWN
from hallu.analysis.run_stats import SHORT, Options, RunStats, analyse
from hallu.errors import UserError
from hallu.report.doc import Doc, fmt
from hallu.store.reader import Run, n_layers_of


@dataclass
class Context:
    """What every section reads: the run, the analysis of it and the document being written."""

    run: Run
    opts: Options
    stats: RunStats
    n_layers: int
    doc: Doc
    res: results.Results | None = None  # the one result pipeline (hallu/analysis/results.py)
    headline: list[str] = field(default_factory=list)  # the lines terminal and summary.md print
    card: list[verdicts.Verdict] = field(default_factory=list)  # what scorecard.json holds
    maps: list[cell_maps.CellMap] = field(default_factory=list)  # the heatmaps' grids
    figures: int = 0  # figures numbered so far (Figure 1 is the behaviour figure)

    def next_figure(self) -> int:
        self.figures = max(self.figures, 1) + 1
        return self.figures

    @property
    def has_labels(self) -> bool:
        """The run has behaviour rows with a style label (Experiment 1 was run)."""
        beh = self.run.behavior
        return beh is not None and behavior_check.label_column(beh) is not None


def intro(c: Context) -> None:
    model = c.run.meta.get("config", {}).get("model", {})
    first = next(iter(c.stats.directions.values()))
    c.doc.p(
        f"Model {model.get('name_or_path', '?')} ({c.n_layers} layers, dtype "
        f"{c.run.meta.get('dtype', model.get('dtype', '?'))}); {len(first.grid.pair_ids)} pairs; "
        f"{c.run.table.num_rows} result rows from {c.run.location}. Report made "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} with {c.opts.n_boot} "
        f"bootstrap resamples and {c.opts.n_perm} sign flips (seed {c.opts.seed})."
    )


def limits_section(c: Context) -> None:
    """At the top: the one headline every output prints, and what limits the conclusion."""
    c.doc.h("Headline (the terminal, summary.md and scorecard.json print the same)")
    for line in c.headline:
        c.doc.p(line)
    found = verdicts.limits(c.run.meta.get("config", {}), c.res)
    if found:
        c.doc.h("Limits of this run")
        c.doc.p("These choices limit what the run can conclude (docs/analysis.md):")
        for line in found:
            c.doc.p(f"- {line}")


def _behaviour_entries(c: Context) -> list[verdicts.Verdict]:
    asym = tracking = None
    which = ""
    if c.has_labels:
        answers, which = behavior_check.answers(c.run.behavior)
        asym = behavior_check.asymmetry(answers, c.opts.n_boot, c.opts.seed)
        tracking = behavior_check.metric_tracking(answers, c.run.table, c.opts.n_boot, c.opts.seed)
    card = scorecard.build(c.stats, asym, tracking, c.run.behavior is not None, which)
    keep = (scorecard.ASYMMETRY.name, scorecard.TRACKING.name)
    return [
        verdicts.Verdict(e.criterion, e.verdict, numbers=e.numbers)
        for e in card
        if e.criterion in keep
    ]


def scorecard_section(c: Context) -> None:
    assert c.res is not None
    c.card = _behaviour_entries(c) + verdicts.patching(c.res)
    c.doc.h("Disconfirmation scorecard")
    c.doc.p(
        "Each criterion is a way the source study's hypothesis could fail (docs/analysis.md). "
        "'supports' / 'contradicts': the interval lies on the study's side / the other side "
        "(for 2A vs 2B: beyond the equivalence margin); 'equivalent': within the margin; "
        "'inconclusive': neither; 'not run': this run lacks the data. Also in scorecard.json."
    )
    c.doc.table(
        ["criterion", "verdict", "pairs used / excluded", "numbers", "flags"],
        [
            [
                e.criterion,
                e.verdict,
                f"{e.n_pairs_used} / {e.n_pairs_excluded}" if e.n_pairs_used else "",
                e.numbers,
                "; ".join(e.flags),
            ]
            for e in c.card
        ],
    )


def behavior_section(c: Context) -> None:
    """Figure 1 and the rates: the prompt is the unit (hallu/analysis/behavior_rates.py); the
    terminal and behavior/summary.md print the same line."""
    from hallu.analysis import behavior_rates
    from hallu.report.behavior import figure1_png

    c.doc.h("Figure 1: behaviour (Experiment 1)")
    if not c.has_labels:
        c.doc.p(
            "Behaviour was not run: this run has no behaviour results (behavior/*.parquet with "
            "pair_id, condition and a style label). Run `python -m hallu.launch +sweep=behavior` "
            "(or +sweep=full). The scorecard marks the behaviour criteria 'not run'."
        )
        return
    beh, o, seed = c.run.behavior, c.opts.n_boot, c.opts.seed
    which, line = behavior_rates.headline(beh, o, seed)  # type: ignore[misc]
    rates = behavior_rates.prompt_rates(beh, o, seed)
    n = max(r.n_prompts for r in rates.values())
    c.doc.figure(
        figure1_png({which: behavior_rates.figure_data(beh, o, seed)}, n),
        f"Figure 1: share of {which} answers of each style per user condition, each prompt's "
        f"share over its answers averaged over {n} prompts per condition; bars: 95% bootstrap "
        "intervals over claims. No patching: the model's own answers.",
    )
    c.doc.p(line)
    c.doc.table(
        ["condition", "declarative rate per prompt [95% over claims]", "prompts", "answers"],
        [[cond, r.rate.fmt(), r.n_prompts, r.n_answers] for cond, r in rates.items()],
    )
    auc = behavior_rates.tracking(beh, o, seed)
    if auc:
        c.doc.p(behavior_rates.tracking_line(auc))


SOURCES = {
    "restore_confidence": ("certain", "uncertain"),
    "induce_tentativeness": ("uncertain", "certain"),
}
CONTROL_SOURCES = {
    "same_class": "the target condition's prompt of another pair",
    "random_source": "an unrelated prompt",
    "norm_matched": "a random vector with the real source vector's norm",
    "neutral_source": "the same claim said by the neutral user",
}


def map_caption(m: cell_maps.CellMap, number: int) -> str:
    """What was patched, where, over how many pairs, and what the colour and dots mean."""
    from hallu.report.figures import COMPONENTS, QUANTITY, TITLES

    k = m.key
    src, tgt = SOURCES.get(k.direction, ("source", "target"))
    what = COMPONENTS.get(k.component, k.component) + (
        f", head {k.head}" if k.head is not None else ""
    )
    if k.window != 1:
        what += f", {k.window} consecutive layers at once"
    source = f"the {src} prompt" if k.control is None else CONTROL_SOURCES.get(k.control, k.control)
    where = (
        "columns aligned on the template anchors (BOS, first user token, the marker, end of the "
        "user's text, last token) and labelled with the token every pair has there"
        if m.align == "anchor"
        else "columns counted from the end (this run has no anchor columns)"
    )
    return (
        f"Figure {number}: {TITLES.get(k.direction, k.direction)}"
        f"{f' - control {k.control}' if k.control else ''}. Patched: {what} ({k.component}), "
        f"copied from {source} into the {tgt} prompt's run, at each layer (rows) and token "
        f"position ({where}). Metric {k.metric}; colour: {QUANTITY[m.quantity]} over "
        f"{m.n_pairs} pairs; dots: {int(m.significant.sum())} cells significant under the max-T "
        f"sign-flip test on these columns (family-wise {m.alpha:.0%})."
    )


def heatmaps(c: Context) -> None:
    from hallu.analysis.noise_flags import INSIDE
    from hallu.report import figures as figs
    from hallu.report.summary import order

    c.doc.h("Where patching restores the metric: one heatmap per identity")
    c.doc.p(
        "Restoration of a cell = (mean patched - mean corrupted) / (mean clean - mean "
        "corrupted) over the pairs that have it (ratio of means). One heatmap per direction, "
        "metric, component, head, layer window and control: no row is averaged into another's "
        "map. Dots mark cells whose effect survives the max-T sign-flip permutation test over "
        f"the whole map at family-wise {c.opts.alpha:.0%}."
    )
    o = c.opts
    c.maps = sorted(cell_maps.maps(c.run.table, o.n_perm, o.seed, o.alpha), key=order)
    for m in c.maps:
        if m.key.control is not None and m is next(x for x in c.maps if x.key.control):
            c.doc.h("Control heatmaps")
        s = c.stats.directions.get(m.key.direction)
        inside = s is not None and s.gap_flag == INSIDE and m.key.metric == MAIN_METRIC
        number = c.next_figure()
        c.doc.figure(figs.heatmap(m, number, inside), map_caption(m, number))


def curve_figures(c: Context) -> None:
    from hallu.report import figures as figs

    c.doc.h("Per-layer curves, headline and controls")
    pairs = ", ".join(f"{SHORT[d]} {len(s.grid.pair_ids)}" for d, s in c.stats.directions.items())
    n = c.next_figure()
    c.doc.figure(
        figs.curves(c.stats, n),
        f"Figure {n}: restoration at the last prompt token per layer ({MAIN_METRIC}, resid_pre "
        f"patched from the source run into the target run, pairs: {pairs}); band: 95% "
        "bootstrap interval over pairs; dashed: controls patched at the same cells; shaded "
        "gold: the headline band of layers",
    )
    n = c.next_figure()
    c.doc.figure(
        figs.headlines(c.stats, n),
        f"Figure {n}: band-mean restoration at the last prompt token with 95% bootstrap "
        f"intervals (resid_pre patched, pairs: {pairs}), for the patch, each control and the "
        "paired 2A - 2B difference; right: each pair's own 2A - 2B difference",
    )
    n = c.next_figure()
    c.doc.figure(
        figs.noise(c.stats, c.run.noise, n),
        f"Figure {n}: each pair's unpatched baseline gap |clean - corrupted| ({MAIN_METRIC}, "
        "logits) against the measured noise floor (red); dashed: the floor a bf16 or fp16 run "
        "of this model would have. Nothing is patched here.",
    )


def headline_numbers(c: Context) -> None:
    c.doc.h("Band means over every pair (descriptive)")
    c.doc.p(
        "The headline at the top excludes pairs whose baseline gap has the wrong sign or lies "
        "inside the floor; this table keeps every pair, to show what the exclusion changes. "
        "Band-mean restoration: restoration at the last position, averaged over the "
        "band's layers, as a ratio of means over pairs (both numerator and denominator "
        "recomputed in every bootstrap resample). Default band: the upper half of the layers, "
        "the source study's layers 20-39 of 40 (--band A:B to change)."
    )
    rows = []
    for d, s in c.stats.directions.items():
        above = "above floor; gap interval holds 0" if s.gap.contains(0.0) else "above floor"
        rows.append(
            [
                f"{SHORT[d]} {d}",
                f"{s.band[0]}-{s.band[-1]}",
                s.headline.fmt() if s.headline else "n/a (last position not swept)",
                s.gap.fmt(4),
                s.gap_flag or above,
            ]
        )
    if c.stats.difference is not None:
        rows.append(["2A - 2B (paired)", "", c.stats.difference.fmt(), "", ""])
    if c.stats.per_pair_difference is not None:
        rows.append(["mean per-pair 2A - 2B", "", c.stats.per_pair_difference.fmt(), "", ""])
    c.doc.table(["", "band", "estimate [95%]", "baseline gap [95%]", "noise floor"], rows)


def locus_section(c: Context) -> None:
    c.doc.h("Locus")
    c.doc.p(
        "The shortest contiguous band of layers holding 80% of the positive per-layer effect at "
        "the last position; intervals are percentiles of the band's first and last layer over "
        "bootstrap resamples of pairs. Layer L means the residual stream entering layer L "
        "(resid_pre), i.e. what layers 0 to L-1 wrote: a band that starts at L was first "
        "written by a component of layer L-1 (a head sweep, sweep.component=head, names it)."
    )
    c.doc.table(
        ["direction", "locus", "resamples with a locus"],
        [
            [
                SHORT[d],
                s.locus.describe() if s.locus else "none (no positive effect)",
                f"{s.locus.found_in:.0%}" if s.locus else "",
            ]
            for d, s in c.stats.directions.items()
        ],
    )


def strongest_cells(c: Context, top: int = 5) -> None:
    """The strongest cells of each experiment heatmap, with bootstrap intervals over pairs."""
    from hallu.analysis import bootstrap

    c.doc.h("Strongest cells")
    rows = []
    for m in (m for m in c.maps if m.key.control is None and m.quantity == "restoration"):
        w = bootstrap.resample_weights(len(m.grid.pair_ids), c.opts.n_boot, c.opts.seed)
        ci = bootstrap.cells(m.grid, w, c.opts.level)
        est = np.nan_to_num(m.estimate, nan=-np.inf)
        for k in np.argsort(est, axis=None)[::-1][:top]:
            i, j = np.unravel_index(k, est.shape)
            if not np.isfinite(est[i, j]):
                continue
            rows.append(
                [
                    SHORT.get(m.key.direction, m.key.direction),
                    cell_maps.describe_key(m.key),
                    m.grid.layers[i],
                    m.labels[j],
                    f"{m.estimate[i, j]:.3f} [{fmt(ci.lo[i, j])}, {fmt(ci.hi[i, j])}]",
                    "n/a" if m.p_adj is None else f"{m.p_adj[i, j]:.4f}",
                ]
            )
    c.doc.table(
        ["dir", "identity", "layer", "position (anchor + offset, token)", "restoration [95%]",
         "max-T p"],
        rows,
    )  # fmt: skip


def controls_section(c: Context) -> None:
    c.doc.h("Controls")
    rows = [
        [
            SHORT[d],
            ctl.name,
            ctl.n_pairs,
            ctl.headline.fmt() if ctl.headline else "n/a",
            ctl.real_minus_control.fmt() if ctl.real_minus_control else "n/a",
        ]
        for d, s in c.stats.directions.items()
        for ctl in s.controls.values()
    ]
    if not rows:
        c.doc.p("No controls in this run: run with +sweep=controls (or +sweep=full).")
        return
    c.doc.p(
        "Same band and normalisation as the headline (the real pair's clean and corrupted "
        "baselines). same_class: the target condition of another pair; random_source: an "
        "unrelated prompt; norm_matched: random vectors with the real vector's norm."
    )
    c.doc.table(["dir", "control", "pairs", "band mean [95%]", "real - control [95%]"], rows)


def _noise_dtype_rows(n: dict[str, Any]) -> list[list[str]]:
    rows = []
    for dtype, v in n["per_dtype"].items():
        if "error" in v:
            rows.append([dtype, "failed: " + v["error"], "", ""])
            continue
        rows.append(
            [dtype]
            + [
                f"{v[k]['max']:.3g} (p95 {v[k]['p95']:.3g})" if k in v else "n/a"
                for k in ("batch", "padding", "precision_vs_float32")
            ]
        )
    return rows


def noise_section(c: Context) -> None:
    c.doc.h("Noise floor")
    n = c.run.noise
    if n is None:
        c.doc.p(
            f"{UNKNOWN}: no noise_floor.json in this run. Measure it (loads the model) with "
            f"`python -m hallu.run.noise {c.run.location or 'RUN'}`. Until then no ratio is "
            "flagged, and none is cleared."
        )
    else:
        c.doc.p(
            f"Metric floor {n['metric_floor']:.3g} in {n['run_dtype']} on {n['device']} "
            f"(over {n['n_prompts']} prompts; mean |metric| {n['metric_abs_mean']:.3g}); gap "
            f"floor {n['gap_floor']:.3g}. {n['definition']}."
        )
        c.doc.table(["dtype", "batch composition", "padding", "vs float32"], _noise_dtype_rows(n))
    rows = [
        [
            SHORT[d],
            s.gap.fmt(4),
            f"{s.pairs_inside_floor} of {len(s.grid.pair_ids)}",
            s.gap_flag or "above floor",
        ]
        for d, s in c.stats.directions.items()
    ]
    c.doc.table(["direction", "mean gap [95%]", "pairs with gap inside floor", "flag"], rows)


def compute_section(c: Context) -> None:
    c.doc.h("Compute spent")
    t = c.run.timings
    if not t:
        c.doc.p("No shard of this run recorded its timing (shards written before timings existed).")
        return
    by_device: dict[str, float] = {}
    for rec in t:
        by_device[rec["device"]] = by_device.get(rec["device"], 0.0) + rec["seconds"]
    wall = max(r["ended"] for r in t) - min(r["started"] for r in t)
    rows = [[dev, f"{sec:.1f}"] for dev, sec in sorted(by_device.items())]
    c.doc.table(["device", "worker-seconds (sum over shards)"], rows)
    c.doc.p(
        f"GPU-seconds: {by_device.get('cuda', 0.0):.1f} (one GPU per worker); wall time from the "
        f"first shard's start to the last shard's end: {wall:.1f} s; {len(t)} of "
        f"{c.run.n_shards} shards timed. Model loading and the noise-floor measurement are not "
        "included."
    )


def provenance(c: Context) -> None:
    from omegaconf import OmegaConf

    c.doc.h("Resolved config")
    c.doc.pre(OmegaConf.to_yaml(c.run.meta.get("config", {})))
    c.doc.h("Versions")
    versions = dict(c.run.meta.get("versions", {}))
    for key in ("git_sha", "host", "model_revision"):
        versions[key] = c.run.meta.get(key)
    c.doc.table(["package", "version"], [[k, v] for k, v in versions.items()])


def mechanism_section(c: Context) -> None:
    """+sweep=mechanism results, when the run has them (hallu/report/mechanism.py)."""
    from hallu.report import mechanism

    tables = mechanism.read(c.run.location) if c.run.location else {}
    if tables:
        mechanism.section(c.doc, tables)


SECTIONS: tuple[Callable[[Context], None], ...] = (
    intro,
    limits_section,
    scorecard_section,
    behavior_section,
    mechanism_section,
    heatmaps,
    curve_figures,
    headline_numbers,
    locus_section,
    strongest_cells,
    controls_section,
    noise_section,
    compute_section,
    provenance,
)


def build_report(run: Run, opts: Options) -> tuple[Doc, RunStats]:
    """The report of one run, and the statistics behind it."""
    ctx = report_context(run, opts)
    return ctx.doc, ctx.stats


def report_context(run: Run, opts: Options) -> Context:
    """Analyse the run once, write every section; the context holds the scorecard entries."""
    from hallu.report.summary import pipeline

    n_layers = n_layers_of(run)
    stats = analyse(run.table, n_layers, run.noise, opts)
    if not stats.directions:
        raise UserError(f"{run.location}: the run has no patching rows to report on")
    ctx = Context(run, opts, stats, n_layers, Doc(f"hallu report: run {run.run_id}"))
    margin = run.meta.get("config", {}).get("analysis", {}).get("equivalence_margin", 0.05)
    ctx.res, ctx.headline = pipeline(run.table, n_layers, run.noise, margin, opts)
    for section in SECTIONS:
        section(ctx)
    return ctx

"""The report of one run, section by section.

`report_context` analyses the run once (`hallu.analysis.pipeline.analyse`) and hands the same
`Context` to each section in `SECTIONS`; a section only formats the results and appends to the
document, so the report, the terminal, summary.md and scorecard.json cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from hallu.analysis import cell_maps, scorecard, verdicts
from hallu.analysis.bootstrap import Interval
from hallu.analysis.directions import SHORT
from hallu.analysis.grid import MAIN_METRIC
from hallu.analysis.noise_flags import UNKNOWN
from hallu.analysis.pipeline import analyse
from hallu.analysis.results import Options, Results
from hallu.errors import UserError
from hallu.report import rehearsal
from hallu.report.doc import Doc, fmt
from hallu.store.reader import Run, n_layers_of


@dataclass
class Context:
    """What every section reads: the run, the analysis of it and the document being written."""

    run: Run
    opts: Options
    res: Results  # every number the report prints (hallu/analysis/results.py)
    n_layers: int
    doc: Doc
    maps: list[cell_maps.CellMap] = field(default_factory=list)  # the heatmaps' grids
    figures: int = 0  # figures numbered so far (Figure 1 is the behaviour figure)

    def next_figure(self) -> int:
        self.figures = max(self.figures, 1) + 1
        return self.figures

    @property
    def headline(self) -> list[str]:
        """The lines the terminal and summary.md print."""
        return scorecard.headline_lines(self.res)

    @property
    def card(self) -> list[verdicts.Verdict]:
        """What scorecard.json holds."""
        return self.res.card


def interval_text(iv: Interval | None, why: str, digits: int = 3) -> str:
    """An interval, or 'n/a (why)' when there is none or it is not finite: never a bare nan."""
    if iv is None or not all(np.isfinite([iv.estimate, iv.lo, iv.hi])):
        return f"n/a ({why})"
    return iv.fmt(digits)


def intro(c: Context) -> None:
    model = c.run.meta.get("config", {}).get("model", {})
    pairs = ", ".join(
        f"{d.short} {len(d.grid.pair_ids)} pairs ({len(d.check.used)} used)"
        for d in c.res.directions.values()
    )
    rows = c.run.table.num_rows if c.run.table is not None else 0
    behaviour = f"; behaviour answers to {c.res.behaviour.n_pairs} pairs" * c.res.behaviour.has_rows
    layers = f"{c.n_layers} layers, " if c.res.directions else ""
    noise = f"{c.res.noise.describe()}; " if c.res.directions else ""
    c.doc.p(
        f"Model {model.get('name_or_path', '?')} ({layers}dtype "
        f"{c.run.meta.get('dtype', model.get('dtype', '?'))}); {pairs or 'no patching rows'}"
        f"{behaviour}; {noise}{rows} result rows from {c.run.location}. "
        "Report made "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} with {c.opts.n_boot} "
        f"bootstrap resamples and {c.opts.n_perm} sign flips (seed {c.opts.seed})."
    )


def premise_lines(c: Context) -> None:
    """What every patching verdict presumes, over every pair, and whether it holds."""
    for d in c.res.directions.values():
        p = d.premise
        if p is None:
            continue
        if not p.holds:
            c.doc.p(
                f"Premise of {d.short}'s verdicts FAILS, so they are inconclusive: "
                + "; ".join(p.fails)
                + "."
            )
            continue
        c.doc.p(
            f"Premise of {d.short}'s verdicts holds: over all {len(d.grid.pair_ids)} pairs the "
            f"baseline gap, signed so the hypothesis makes it positive, is {p.gap.fmt()} logits "
            f"(95% t interval, above 0); {p.excluded_share:.0%} of pairs excluded (at most "
            f"{c.opts.max_excluded_share:.0%}, analysis.max_excluded_share)."
        )


def limits_section(c: Context) -> None:
    """At the top: the one headline every output prints, and what limits the conclusion."""
    c.doc.h("Headline (the terminal, summary.md and scorecard.json print the same)")
    for line in c.headline:
        c.doc.p(line)
    if c.res.directions:  # the floor judges patching baselines only
        c.doc.p(f"This run's {c.res.noise.describe()}; every section below uses this one value.")
    premise_lines(c)
    found = verdicts.limits(c.run.meta.get("config", {}), c.res)
    if found:
        c.doc.h("Limits of this run")
        c.doc.p("These choices limit what the run can conclude (docs/analysis.md):")
        for line in found:
            c.doc.p(f"- {line}")


def scorecard_section(c: Context) -> None:
    scorecard_table(c.doc, c.card)


def scorecard_table(doc: Doc, card: list[verdicts.Verdict]) -> None:
    """The scorecard as every report prints it (a mechanism-only report too)."""
    doc.h("Disconfirmation scorecard")
    doc.p(
        "Each criterion is a way the source study's hypothesis could fail (docs/analysis.md). "
        "'supports' / 'contradicts': the interval lies on the study's side / the other side "
        "(for 2A vs 2B: beyond the equivalence margin); 'equivalent': within the margin; "
        "'inconclusive': neither, or a gate failed (the flags say which: the premise, fewer than "
        "analysis.min_pairs pairs, an instrument coarser than the margin); 'not run': this run "
        "lacks the data. Intervals are t intervals over pairs (claims). Also in scorecard.json."
    )
    doc.table(
        [
            "criterion",
            "verdict",
            "estimate [interval]",
            "pairs used / excluded",
            "numbers",
            "flags",
        ],
        [
            [
                e.criterion,
                e.verdict,
                _estimate_text(e),
                f"{e.n_pairs_used} / {e.n_pairs_excluded}" if e.verdict != verdicts.NOT_RUN else "",
                e.numbers,
                "; ".join(e.flags),
            ]
            for e in card
        ],
    )
    for e in card:
        if e.cannot_tell and e.verdict != verdicts.NOT_RUN:
            doc.p(f"What '{e.criterion}: {e.verdict}' cannot tell: {e.cannot_tell}")


def _estimate_text(e: verdicts.Verdict) -> str:
    """A scorecard entry's estimate and interval, with what they measure."""
    if e.estimate is None:
        return ""
    iv = "" if e.interval is None else f" [{fmt(e.interval[0])}, {fmt(e.interval[1])}]"
    return f"{fmt(e.estimate)}{iv}: {e.quantity}"


def behavior_section(c: Context) -> None:
    """Figure 1 and the rates: the prompt is the unit (hallu/analysis/behavior_rates.py); the
    terminal and behavior/summary.md print the same line."""
    from hallu.analysis import behavior_rates
    from hallu.report.behavior import figure1_png

    b = c.res.behaviour
    c.doc.h("Figure 1: behaviour (Experiment 1)")
    if not b.has_labels:
        c.doc.p(
            "Behaviour was not run: this run has no behaviour results (behavior/*.parquet with "
            "pair_id, condition and a style label). Run `python -m hallu.launch +sweep=behavior` "
            "(or +sweep=full). The scorecard marks the behaviour criteria 'not run'."
        )
        return
    n = max(r.n_prompts for r in b.rates.values())
    c.doc.figure(
        figure1_png({b.which: b.figure}, n),
        f"Figure 1: share of {b.which} answers of each style per user condition, each prompt's "
        f"share over its answers averaged over {n} prompts per condition; bars: 95% bootstrap "
        "intervals over claims. No patching: the model's own answers.",
    )
    c.doc.p(b.rate_line)
    c.doc.table(
        ["condition", "declarative rate per prompt [95% over claims]", "prompts", "answers"],
        [[cond, r.rate.fmt(), r.n_prompts, r.n_answers] for cond, r in b.rates.items()],
    )
    if b.auroc:
        c.doc.p(behavior_rates.tracking_line(b.auroc))


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
        s = c.res.directions.get(m.key.direction)
        inside = s is not None and s.inside and m.key.metric == MAIN_METRIC
        number = c.next_figure()
        c.doc.figure(figs.heatmap(m, number, inside), map_caption(m, number))


def curves_caption(res: Results, number: int) -> str:
    """What the per-layer figure draws, and only that: controls and their reasons if absent."""
    pairs = ", ".join(f"{d.short} {len(d.check.used)}" for d in res.directions.values())
    every = [(d.short, c) for d in res.directions.values() for c in d.controls.values()]
    drawn = [f"{short} {c.name}" for short, c in every if c.curve is not None]
    missing = [f"{short} {c.name}" for short, c in every if c.curve is None]
    text = (
        f"Figure {number}: restoration at the last prompt token per layer ({MAIN_METRIC}, "
        "resid_pre patched from the source run into the target run, over the pairs that pass "
        f"the gap check: {pairs}); band: 95% bootstrap interval over pairs; shaded gold: the "
        "headline band of layers"
    )
    if drawn:
        text += (
            f"; dashed: controls ({', '.join(drawn)}) patched at the same cells, as restoration "
            "toward their own source"
        )
    if missing:
        text += (
            f". Not drawn: {', '.join(missing)} (no restoration toward an own source: no source "
            "prompt, or its source's metric equals the target's; see the controls table)"
        )
    return text


def noise_caption(res: Results, number: int) -> str:
    from hallu.report.figures import other_dtype_floors

    text = (
        f"Figure {number}: each pair's unpatched baseline gap |clean - corrupted| ({MAIN_METRIC}, "
        "logits), every pair. Nothing is patched here."
    )
    if not res.noise.measured:
        return text + " No floor is drawn: the noise floor was not measured in this run."
    text += f" Red line: the measured gap floor ({res.noise.gap_floor:.3g})"
    others = other_dtype_floors(res)
    if others:
        text += f"; dashed grey: the floor a {' or '.join(others)} run of this model would have"
    return text + "."


def curve_figures(c: Context) -> None:
    from hallu.report import figures as figs

    c.doc.h("Per-layer curves, headline and controls")
    n = c.next_figure()
    c.doc.figure(figs.curves(c.res, n), curves_caption(c.res, n))
    pairs = ", ".join(f"{d.short} {len(d.check.used)}" for d in c.res.directions.values())
    drawn = [name for name, _ in figs.headline_rows(c.res)]
    n = c.next_figure()
    c.doc.figure(
        figs.headlines(c.res, n),
        f"Figure {n}: band-mean restoration at the last prompt token with 95% bootstrap "
        f"intervals (resid_pre patched, pairs used: {pairs}): {', '.join(drawn)}; right: each "
        "pair's own 2A - 2B difference"
        + ("" if c.res.per_pair_values is not None else " (not drawn: needs both directions)"),
    )
    n = c.next_figure()
    c.doc.figure(figs.noise(c.res, n), noise_caption(c.res, n))


def headline_numbers(c: Context) -> None:
    c.doc.h("Band means over every pair (descriptive)")
    c.doc.p(
        "The headline at the top excludes pairs whose baseline gap has the wrong sign or lies "
        "inside the gap floor; this table keeps every pair, to show what the exclusion changes. "
        "Band-mean restoration: restoration at the last position, averaged over the "
        "band's layers, as a ratio of means over pairs (both numerator and denominator "
        "recomputed in every bootstrap resample). Default band: the upper half of the layers, "
        "the source study's layers 20-39 of 40 (--band A:B to change)."
    )
    rows = []
    for d in c.res.directions.values():
        rows.append(
            [
                f"{d.short} {d.direction}",
                f"{d.band[0]}-{d.band[-1]}",
                len(d.grid.pair_ids),
                interval_text(d.all_pairs, "last position not swept"),
                interval_text(d.headline, "no pair used"),
                interval_text(d.gap_all, "no pair", 4),
                d.gap_flag or "above floor",
            ]
        )
    if c.res.difference is not None:
        rows.append(["2A - 2B (paired, used pairs)", "", len(c.res.common_pairs), "",
                     c.res.difference.fmt(), "", ""])  # fmt: skip
    if c.res.per_pair_difference is not None:
        rows.append(["mean per-pair 2A - 2B (used pairs)", "", len(c.res.common_pairs), "",
                     c.res.per_pair_difference.fmt(), "", ""])  # fmt: skip
    c.doc.table(
        ["", "band", "pairs", "every pair [95%]", "used pairs (headline) [95%]",
         "baseline gap, every pair [95%]", "noise floor"],
        rows,
    )  # fmt: skip


LOCUS_HEADER = ["direction", "pairs used", "locus", "normalised profile (restoration / maximum)"]


def locus_rows(res: Results) -> list[list[Any]]:
    """The locus table: the scorecard's loci (used pairs)."""
    return [
        [
            d.short,
            len(d.check.used),
            d.locus.describe() if d.locus else "none (no layer's interval lies above 0)",
            " ".join(f"{x:.2f}" for x in d.locus.profile) if d.locus else "",
        ]
        for d in res.directions.values()
    ]


def locus_section(c: Context) -> None:
    c.doc.h("Locus")
    c.doc.p(
        "Each direction's band: the contiguous layers, around the peak of its per-layer "
        "restoration at the last position divided by its own maximum, whose restoration has its "
        f"{c.opts.level:.0%} t interval above 0; so a weaker effect does not make a narrower band. "
        "Shared when, recomputing both bands in every bootstrap resample of pairs, the "
        f"{c.opts.level:.0%} intervals of both edges' 2B - 2A shifts lie inside "
        "+-analysis.locus_margin_layers (a shift of that many layers counts as different); "
        "different when one lies entirely outside. "
        "Layer L means the residual stream entering layer L "
        "(resid_pre), i.e. what layers 0 to L-1 wrote: a band that starts at L was first "
        "written by a component of layer L-1 (a head sweep, sweep.component=head, names it). "
        "Over the pairs that pass the gap check, as the scorecard's locus criterion."
    )
    c.doc.table(LOCUS_HEADER, locus_rows(c.res))


def strongest_cells(c: Context, top: int = 5) -> None:
    """The strongest cells of each experiment heatmap (hallu/analysis/cell_maps.py)."""
    c.doc.h("Strongest cells")
    rows = []
    for m in (m for m in c.maps if m.key.control is None and m.quantity == "restoration"):
        for cell in cell_maps.strongest(m, c.opts.n_boot, c.opts.seed, c.opts.level, top):
            rows.append(
                [
                    SHORT.get(m.key.direction, m.key.direction),
                    cell_maps.describe_key(m.key),
                    cell.layer,
                    cell.label,
                    f"{cell.estimate:.3f} [{fmt(cell.lo)}, {fmt(cell.hi)}]",
                    "n/a (no permutation test)" if cell.p_adj is None else f"{cell.p_adj:.4f}",
                ]
            )
    c.doc.table(
        ["dir", "identity", "layer", "position (anchor + offset, token)", "restoration [95%]",
         "max-T p"],
        rows,
    )  # fmt: skip


CONTROLS_HEADER = [
    "dir",
    "control",
    "pairs",
    "|real| vs |control| (logits)",
    "real change [95%] (logits)",
    "control change [95%] (logits)",
    "real, fraction of its source's gap [95%]",
    "control, fraction of its own source's gap [95%]",
    "|real| - |control| [95%] (logits)",
    "verdict",
]


def controls_rows(res: Results) -> list[list[Any]]:
    """The controls table: the scorecard's numbers (verdicts.control_line states the same)."""
    rows = []
    for d in res.directions.values():
        for ctl in d.controls.values():
            rows.append(
                [
                    d.short,
                    ctl.name,
                    ctl.n_pairs,
                    f"{abs(ctl.real_change.estimate):.3f} vs {abs(ctl.change.estimate):.3f}",
                    ctl.real_change.fmt(),
                    ctl.change.fmt(),
                    verdicts.fraction_text(ctl.real_fraction),
                    verdicts.fraction_text(ctl.toward_own),
                    ctl.excess.fmt(),
                    verdicts.control_side(ctl.excess, d.check.floor),
                ]
            )
    return rows


def controls_section(c: Context) -> None:
    c.doc.h("Controls")
    rows = controls_rows(c.res)
    if not rows:
        c.doc.p("No controls in this run: run with +sweep=controls (or +sweep=full).")
        return
    c.doc.p(
        "Over the pairs each direction uses (its gap check), the same band as the headline, t "
        "intervals over pairs. change: band-mean patched - corrupted in logits, for the real "
        "patch and for the control; each is also given as a fraction of its own source's gap "
        "(the real pair's clean - corrupted for the real patch, the control source's for the "
        "control; n/a for norm_matched, which has no source prompt). |real| - |control|: how much "
        "further the real patch moves the metric than the control, in whichever direction each "
        "moves it; a control that moves it further, either way, counts against (verdict "
        "contradicts). same_class: the target condition of another pair; random_source: an "
        "unrelated prompt; norm_matched: random vectors drawn like the real activations at that "
        "site; neutral_source: the same claim said by the neutral user. The verdict column is the "
        "scorecard's, per control."
    )
    c.doc.table(CONTROLS_HEADER, rows)


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
    n = c.res.noise.record
    if not c.res.noise.measured or n is None:
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
            d.short,
            interval_text(d.gap_all, "no pair", 4),
            f"{d.inside_noise} of {len(d.grid.pair_ids)}" if c.res.noise.measured else UNKNOWN,
            d.gap_flag or "above floor",
        ]
        for d in c.res.directions.values()
    ]
    c.doc.table(
        ["direction", "mean gap, every pair [95%]", "pairs with gap inside the noise floor",
         "flag"],
        rows,
    )  # fmt: skip


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
# Patching rows, none of the main identity (a head-only, attn_out- or mlp_out-only sweep): maps
# and strongest cells of what was patched; the scorecard's patching criteria are "not run".
OTHER_IDENTITIES: tuple[Callable[[Context], None], ...] = tuple(
    s
    for s in SECTIONS
    if s not in (curve_figures, headline_numbers, locus_section, controls_section)
)
# A behaviour-only run (+sweep=behavior): no patching rows, so no maps, curves or controls.
BEHAVIOUR_ONLY: tuple[Callable[[Context], None], ...] = (
    intro,
    limits_section,
    scorecard_section,
    behavior_section,
    provenance,
)


def build_report(run: Run, opts: Options) -> tuple[Doc, Results]:
    """The report of one run, and the results behind it."""
    ctx = report_context(run, opts)
    return ctx.doc, ctx.res


def options_of(run: Run, opts: Options) -> Options:
    """The report's options with the run's configured `analysis` section."""
    return opts.configured(run.meta.get("config", {}).get("analysis"))


def analyse_run(run: Run, opts: Options) -> Results:
    """The one analysis of a stored run (rows, behaviour, noise floor)."""
    n_layers = n_layers_of(run) if run.table is not None else 0
    return analyse(run.table, n_layers, run.noise, run.behavior, options_of(run, opts))


def report_context(run: Run, opts: Options) -> Context:
    """Analyse the run once, write every section; the context holds the scorecard entries."""
    res = analyse_run(run, opts)
    has_rows = run.table is not None and run.table.num_rows > 0
    if not has_rows and not res.behaviour.has_rows:
        raise UserError(f"{run.location}: the run has no patching or behaviour rows to report on")
    ctx = Context(run, res.options, res, res.n_layers, Doc(f"hallu report: run {run.run_id}"))
    sections = SECTIONS if res.directions else OTHER_IDENTITIES if has_rows else BEHAVIOUR_ONLY
    if rehearsal.is_rehearsal(run.meta):  # random weights: what it cost, no verdicts
        ctx.doc = Doc(f"hallu report: run {run.run_id} (rehearsal)")
        ctx.doc.p(rehearsal.NOTE)
        sections = (intro, compute_section, provenance)
    for section in sections:
        section(ctx)
    return ctx

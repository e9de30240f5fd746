"""`python -m hallu.report RUN [--compare RUN_B]`: one self-contained HTML report and a summary.

RUN is a run directory or an `s3://bucket/prefix/run_id` (hallu/store/reader.py). The report says
how sure each number is (bootstrap intervals over pairs, max-T permutation tests over the cell
grid), whether the baseline gap clears the metric's noise floor (hallu/run/noise.py), whether the
controls light up the same place, and ends in a disconfirmation scorecard
(hallu/analysis/scorecard.py). It writes `report.html` (figures embedded as base64 PNG) and
`report.md` into the run directory (or `--out DIR`); with `--compare RUN_B`, `compare_<B>.html`
and `compare_<B>.md` with difference maps by relative depth.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hallu.analysis import behavior_check, scorecard
from hallu.analysis.compare import compare
from hallu.analysis.noise_flags import INSIDE, UNKNOWN
from hallu.analysis.run_stats import SHORT, Options, RunStats, analyse
from hallu.errors import EXIT_USER_ERROR, UserError
from hallu.store.reader import Run, n_layers_of, open_run

# --- a tiny document model rendered both to HTML and to markdown -------------------------------


@dataclass
class Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    n_figures: int = 0

    def h(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def figure(self, png: bytes, caption: str) -> None:
        self.n_figures += 1
        self.blocks.append(("fig", (png, caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, v in self.blocks:
            if kind == "h2":
                out += [f"## {v}", ""]
            elif kind == "p":
                out += [v, ""]
            elif kind == "table":
                headers, rows = v
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "fig":
                out += [f"*{v[1]}* (figure in report.html)", ""]
            elif kind == "pre":
                out += ["```", v.rstrip(), "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, v in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(v)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(v)}</p>")
            elif kind == "table":
                headers, rows = v
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in rows)
                body.append(f"<table><tr>{head}</tr>{trs}</table>")
            elif kind == "fig":
                data = base64.b64encode(v[0]).decode()
                body.append(
                    f'<figure><img alt="{html.escape(v[1])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(v[1])}</figcaption></figure>"
                )
            elif kind == "pre":
                body.append(f"<pre>{html.escape(v)}</pre>")
        return PAGE.format(
            title=html.escape(self.title), body="\n".join(body), n_figures=self.n_figures
        )


def _td(cell: Any) -> str:
    text = str(cell)
    cls = ""
    if text.startswith(scorecard.SUPPORTS):
        cls = ' class="ok"'
    elif text.startswith((scorecard.CONTRADICTS, scorecard.NOISE, INSIDE)):
        cls = ' class="bad"'
    elif text.startswith((scorecard.INCONCLUSIVE, scorecard.NOT_RUN, UNKNOWN)):
        cls = ' class="meh"'
    return f"<td{cls}>{html.escape(text)}</td>"


# The script checks that every embedded figure decoded; a headless browser reads the title.
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }}
td.ok {{ background: #e3f4e1; }} td.bad {{ background: #f8dede; }} td.meh {{ background: #f7f2d8; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} figcaption {{ font-size: 0.85em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {{ return !i.complete || i.naturalWidth === 0; }});
  document.title = broken.length === 0 && imgs.length === {n_figures}
    ? "hallu report ok: " + imgs.length + " figures"
    : "hallu report BROKEN: " + broken.length + " of " + imgs.length + " figures";
}});
</script>
</body></html>
"""

# --- the report of one run -----------------------------------------------------------------------


def _token_labels(run: Run, direction: str, positions: list[int]) -> list[str]:
    """Label each column with the first experiment row's target token at that position."""
    import pyarrow.compute as pc

    t = run.table
    sub = t.filter(pc.and_(pc.equal(t["direction"], direction), pc.is_null(t["control"])))
    sub = sub.filter(pc.equal(sub["layer"], pc.min(sub["layer"])))
    first: dict[int, str] = {}
    for p, tok in zip(sub["position_from_end"].to_pylist(), sub["token"].to_pylist(), strict=True):
        first.setdefault(p, tok)
    return [f"{p} {first.get(p, '')}" for p in positions]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _compute_section(doc: Doc, run: Run) -> None:
    doc.h("Compute spent")
    t = run.timings
    if not t:
        doc.p("No shard of this run recorded its timing (shards written before timings existed).")
        return
    by_device: dict[str, float] = {}
    for rec in t:
        by_device[rec["device"]] = by_device.get(rec["device"], 0.0) + rec["seconds"]
    wall = max(r["ended"] for r in t) - min(r["started"] for r in t)
    rows = [[dev, f"{sec:.1f}"] for dev, sec in sorted(by_device.items())]
    doc.table(["device", "worker-seconds (sum over shards)"], rows)
    doc.p(
        f"GPU-seconds: {by_device.get('cuda', 0.0):.1f} (one GPU per worker); wall time from the "
        f"first shard's start to the last shard's end: {wall:.1f} s; {len(t)} of {run.n_shards} "
        "shards timed. Model loading and the noise-floor measurement are not included."
    )


def _noise_section(doc: Doc, run: Run, stats: RunStats) -> None:
    doc.h("Noise floor")
    if run.noise is None:
        doc.p(
            f"{UNKNOWN}: no noise_floor.json in this run. Measure it (loads the model) with "
            f"`python -m hallu.report {run.location} --measure-noise` or "
            "`python -m hallu.run.noise RUN_DIR`. Until then no ratio is flagged, "
            "and none is cleared."
        )
    else:
        n = run.noise
        doc.p(
            f"Metric floor {n['metric_floor']:.3g} in {n['run_dtype']} on {n['device']} "
            f"(over {n['n_prompts']} prompts; mean |metric| {n['metric_abs_mean']:.3g}); gap "
            f"floor {n['gap_floor']:.3g}. {n['definition']}."
        )
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
        doc.table(["dtype", "batch composition", "padding", "vs float32"], rows)
    rows = [
        [
            SHORT[d],
            s.gap.fmt(4),
            f"{s.pairs_inside_floor} of {len(s.grid.pair_ids)}",
            s.gap_flag or "above floor",
        ]
        for d, s in stats.directions.items()
    ]
    doc.table(["direction", "mean gap [95%]", "pairs with gap inside floor", "flag"], rows)


def _behavior_section(doc: Doc, run: Run) -> dict[str, dict[str, float]] | None:
    doc.h("Figure 1: behaviour (Experiment 1)")
    if run.behavior is None or behavior_check.label_column(run.behavior) is None:
        doc.p(
            "Behaviour was not run: this run has no behaviour results (behavior/*.parquet with "
            "pair_id, condition and a style label). Run `python -m hallu.launch +sweep=behavior` "
            "(or +sweep=full). The scorecard marks the behaviour criteria 'not run'."
        )
        return None
    answers, which = behavior_check.answers(run.behavior)
    rates = behavior_check.rates(answers)
    from hallu.report import figures as figs

    png = run.figure1_png or figs.behavior(rates)
    doc.figure(png, "Figure 1: declarative answers per user condition (Wilson 95% intervals)")
    doc.p(f"Answers used here and in the scorecard: {which} decoding.")
    doc.table(
        ["condition", "declarative / answers", "rate [Wilson 95%]"],
        [
            [
                c,
                f"{r['declarative']}/{r['n']}",
                f"{_fmt(r['rate'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]",
            ]
            for c, r in rates.items()
        ],
    )
    return rates


def build_report(run: Run, opts: Options) -> tuple[Doc, RunStats]:
    from hallu.report import figures as figs

    n_layers = n_layers_of(run)
    stats = analyse(run.table, n_layers, run.noise, opts)
    if not stats.directions:
        raise UserError(f"{run.location}: the run has no patching rows to report on")
    model = run.meta.get("config", {}).get("model", {})
    doc = Doc(f"hallu report: run {run.run_id}")
    first = next(iter(stats.directions.values()))
    doc.p(
        f"Model {model.get('name_or_path', '?')} ({n_layers} layers, dtype "
        f"{run.meta.get('dtype', model.get('dtype', '?'))}); {len(first.grid.pair_ids)} pairs; "
        f"{run.table.num_rows} result rows from {run.location}. Report made "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} with {opts.n_boot} "
        f"bootstrap resamples and {opts.n_perm} sign flips (seed {opts.seed})."
    )
    asym = tracking = None
    which = ""
    if run.behavior is not None and behavior_check.label_column(run.behavior) is not None:
        answers, which = behavior_check.answers(run.behavior)
        asym = behavior_check.asymmetry(answers, opts.n_boot, opts.seed)
        tracking = behavior_check.metric_tracking(answers, run.table, opts.n_boot, opts.seed)
    card = scorecard.build(stats, asym, tracking, run.behavior is not None, which)
    doc.h("Disconfirmation scorecard")
    doc.p(
        "Each criterion is a way the seed's hypothesis could fail. 'supports': the 95% interval "
        "lies on the seed's side; 'contradicts': on the other side; 'inconclusive': it "
        "straddles; 'not a finding (noise floor)': the ratio's denominator is inside the "
        "measured noise floor; 'not run': this run lacks the data (the entry says what to run)."
    )
    doc.table(
        ["criterion", "question", "verdict", "numbers"],
        [[e.criterion, e.question, e.verdict, e.numbers] for e in card],
    )
    _behavior_section(doc, run)

    doc.h("Figures 2-3: where patching restores the metric")
    doc.p(
        "Restoration of a cell = (mean patched - mean corrupted) / (mean clean - mean "
        "corrupted) over pairs (ratio of means). Dots mark cells whose effect survives the "
        f"max-T sign-flip permutation test over the whole grid at family-wise {opts.alpha:.0%}."
    )
    for number, (d, s) in enumerate(stats.directions.items(), start=2):
        doc.figure(
            figs.heatmap(s, _token_labels(run, d, s.grid.positions), number),
            f"Figure {number}: {figs.TITLES[d]}",
        )
    doc.h("Per-layer curves, headline and controls")
    doc.figure(
        figs.curves(stats),
        "Figure 4: restoration at the last position per layer, 95% bootstrap bands; dashed: "
        "controls; shaded gold: the headline band",
    )
    doc.figure(
        figs.headlines(stats),
        "Figure 5: band-mean restoration with 95% intervals (patch, controls, 2A - 2B) and each "
        "pair's own 2A - 2B difference",
    )
    doc.figure(
        figs.noise(stats, run.noise),
        "Figure 6: each pair's baseline gap against the noise floor (dashed: the floor a bf16 "
        "or fp16 run of this model would have)",
    )

    doc.h("Headline numbers")
    doc.p(
        "Headline = band-mean restoration: restoration at the last position, averaged over the "
        "band's layers, as a ratio of means over pairs (both numerator and denominator "
        "recomputed in every bootstrap resample). Default band: the upper half of the layers, "
        "the seed's layers 20-39 of 40 (--band A:B to change)."
    )
    rows = []
    for d, s in stats.directions.items():
        rows.append(
            [
                f"{SHORT[d]} {d}",
                f"{s.band[0]}-{s.band[-1]}",
                s.headline.fmt() if s.headline else "n/a (last position not swept)",
                s.gap.fmt(4),
                s.gap_flag
                or ("above floor; gap interval holds 0" if s.gap.contains(0.0) else "above floor"),
            ]
        )
    if stats.difference is not None:
        rows.append(["2A - 2B (paired)", "", stats.difference.fmt(), "", ""])
    if stats.per_pair_difference is not None:
        rows.append(["mean per-pair 2A - 2B", "", stats.per_pair_difference.fmt(), "", ""])
    doc.table(["", "band", "estimate [95%]", "baseline gap [95%]", "noise floor"], rows)

    doc.h("Locus")
    doc.p(
        "The shortest contiguous band of layers holding 80% of the positive per-layer effect at "
        "the last position; intervals are percentiles of the band's first and last layer over "
        "bootstrap resamples of pairs."
    )
    doc.table(
        ["direction", "locus", "resamples with a locus"],
        [
            [
                SHORT[d],
                s.locus.describe() if s.locus else "none (no positive effect)",
                f"{s.locus.found_in:.0%}" if s.locus else "",
            ]
            for d, s in stats.directions.items()
        ],
    )
    doc.h("Strongest cells")
    rows = []
    for d, s in stats.directions.items():
        est = np.nan_to_num(s.cells.estimate, nan=-np.inf)
        for k in np.argsort(est, axis=None)[::-1][:5]:
            i, j = np.unravel_index(k, est.shape)
            if not np.isfinite(est[i, j]):
                continue
            rows.append(
                [
                    SHORT[d],
                    s.grid.layers[i],
                    s.grid.positions[j],
                    f"{s.cells.estimate[i, j]:.3f} [{_fmt(s.cells.lo[i, j])}, "
                    f"{_fmt(s.cells.hi[i, j])}]",
                    f"{s.p_adj[i, j]:.4f}",
                    s.gap_flag or "above floor",
                ]
            )
    doc.table(["dir", "layer", "pos from end", "restoration [95%]", "max-T p", "noise"], rows)

    doc.h("Controls")
    crow = [
        [
            SHORT[d],
            c.name,
            c.n_pairs,
            c.headline.fmt() if c.headline else "n/a",
            c.real_minus_control.fmt() if c.real_minus_control else "n/a",
        ]
        for d, s in stats.directions.items()
        for c in s.controls.values()
    ]
    if crow:
        doc.p(
            "Same band and normalisation as the headline (the real pair's clean and corrupted "
            "baselines). same_class: the target condition of another pair; random_source: an "
            "unrelated prompt; norm_matched: random vectors with the real vector's norm."
        )
        doc.table(["dir", "control", "pairs", "band mean [95%]", "real - control [95%]"], crow)
    else:
        doc.p("No controls in this run: run with +sweep=controls (or +sweep=full).")

    _noise_section(doc, run, stats)
    _compute_section(doc, run)
    doc.h("Resolved config")
    from omegaconf import OmegaConf

    doc.pre(OmegaConf.to_yaml(run.meta.get("config", {})))
    doc.h("Versions")
    versions = dict(run.meta.get("versions", {}))
    versions["git_sha"] = run.meta.get("git_sha")
    versions["host"] = run.meta.get("host")
    versions["model_revision"] = run.meta.get("model_revision")
    doc.table(["package", "version"], [[k, v] for k, v in versions.items()])
    return doc, stats


def compare_report(a: Run, b: Run, opts: Options) -> Doc:
    from hallu.report import figures as figs

    na, nb = n_layers_of(a), n_layers_of(b)
    sa = analyse(a.table, na, a.noise, opts)
    sb = analyse(b.table, nb, b.noise, opts)
    doc = Doc(f"hallu comparison: {a.run_id} (A) - {b.run_id} (B)")
    doc.p(
        f"A: {a.meta.get('config', {}).get('model', {}).get('name_or_path')} ({na} layers); "
        f"B: {b.meta.get('config', {}).get('model', {}).get('name_or_path')} ({nb} layers). "
        "Layers are compared by relative depth (layer / (n_layers - 1)) in "
        f"{min(na, nb)} bins. Dots mark cells whose 95% bootstrap interval of A - B excludes 0."
    )
    rows = []
    number = 1
    for d in sa.directions:
        if d not in sb.directions:
            continue
        diff = compare(sa.directions[d], na, sb.directions[d], nb, opts.level, opts.seed)
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
        for label, s, n in (("A", sa.directions[d], na), ("B", sb.directions[d], nb)):
            if s.curve is not None:
                depth = np.array(s.grid.layers) / max(1, n - 1)
                series.append((f"{label} ({len(s.grid.pair_ids)} pairs)", depth, *s.curve))
        if series:
            doc.figure(
                figs.compare_curves(series, figs.TITLES[d]),
                f"Figure {number}: per-layer curves by relative depth, {SHORT[d]}",
            )
            number += 1
        ha, hb = sa.directions[d].headline, sb.directions[d].headline
        rows.append(
            [
                SHORT[d],
                ha.fmt() if ha else "n/a",
                hb.fmt() if hb else "n/a",
                diff.headline.fmt() if diff.headline else "n/a",
                int(diff.significant.sum()),
                sa.directions[d].gap_flag or "above floor",
                sb.directions[d].gap_flag or "above floor",
            ]
        )
    if not rows:
        raise UserError("--compare: the two runs share no direction to compare")
    doc.h("Headline band means")
    doc.table(
        ["dir", "A [95%]", "B [95%]", "A - B [95%]", "cells differing", "A noise", "B noise"],
        rows,
    )
    return doc


# --- command line --------------------------------------------------------------------------------


def _band(text: str) -> list[int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--band {text!r}: use FIRST:LAST, e.g. 20:39") from None
    if a > b or a < 0:
        raise argparse.ArgumentTypeError(f"--band {text!r}: need 0 <= FIRST <= LAST")
    return list(range(a, b + 1))


def _out_dir(run: Run, source: str, out: str | None) -> Path:
    if out:
        return Path(out)
    if source.startswith("s3://"):
        return Path("reports") / run.run_id
    return Path(source)


def _write(path: Path, text: str) -> None:
    from hallu.store.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m hallu.report", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run directory or s3://bucket/prefix/run_id")
    ap.add_argument("--compare", metavar="RUN_B", help="a second run: difference maps A - B")
    ap.add_argument("--out", help="output directory (default: the run directory)")
    ap.add_argument(
        "--measure-noise",
        action="store_true",
        help="measure the noise floor first (loads the run's model)",
    )
    ap.add_argument(
        "--band", type=_band, help="headline layer band FIRST:LAST (default: upper half)"
    )
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--n-perm", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the test")
    args = ap.parse_args(argv)
    opts = Options(
        n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed, band=args.band, alpha=args.alpha
    )
    try:
        if args.n_boot < 100 or args.n_perm < 100:
            raise UserError("--n-boot and --n-perm: use at least 100 (2000 is the default)")
        if not 0 < args.alpha < 1:
            raise UserError(f"--alpha {args.alpha}: use a rate between 0 and 1, e.g. 0.05")
        if args.measure_noise:
            if args.run.startswith("s3://"):
                raise UserError("--measure-noise needs a local run directory (it writes into it)")
            from hallu.run import noise

            noise.write(Path(args.run), noise.measure(noise.config_of_run(Path(args.run))))
        run = open_run(args.run)
        out = _out_dir(run, args.run, args.out)
        if args.compare:
            other = open_run(args.compare)
            doc = compare_report(run, other, opts)
            stem = f"compare_{other.run_id}"
        else:
            doc, _ = build_report(run, opts)
            stem = "report"
        _write(out / f"{stem}.html", doc.html())
        _write(out / f"{stem}.md", doc.markdown())
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"report: {out / (stem + '.html')} and {stem}.md")
    if not args.compare:
        print(json.dumps({"figures": doc.n_figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

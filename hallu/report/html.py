"""`python -m hallu.report RUN [--compare RUN_B]`: one self-contained HTML report and a summary.

RUN is a run directory or an `s3://bucket/prefix/run_id` (hallu/store/reader.py). The report says
how sure each number is (bootstrap intervals over pairs, max-T permutation tests over the cell
grid), whether the baseline gap clears the metric's noise floor (hallu/run/noise.py), whether the
controls light up the same place, and ends in a disconfirmation scorecard
(hallu/analysis/scorecard.py), all from one analysis (hallu/analysis/pipeline.py). It writes
`report.html` (figures embedded as base64 PNG), `report.md` and `scorecard.json` into the run
directory (or `--out DIR`); with `--compare RUN_B`, `compare_<B>.html` and `compare_<B>.md` with
difference maps by relative depth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hallu.analysis import verdicts
from hallu.analysis.pipeline import analyse
from hallu.analysis.results import Options
from hallu.errors import EXIT_USER_ERROR, UserError
from hallu.report import rehearsal
from hallu.report.comparison import compare_report
from hallu.report.doc import Doc
from hallu.report.mechanism import mechanism_only
from hallu.report.sections import report_context, scorecard_table
from hallu.store.reader import Run, open_run


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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hallu.report", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run directory or s3://bucket/prefix/run_id")
    ap.add_argument("--compare", metavar="RUN_B", help="a second run: difference maps A - B")
    ap.add_argument("--out", help="output directory (default: the run directory)")
    ap.add_argument(
        "--band", type=_band, help="headline layer band FIRST:LAST (default: upper half)"
    )
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--n-perm", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="RNG seed of resamples and sign flips")
    ap.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the test")
    return ap


def _check(args: argparse.Namespace) -> None:
    if args.n_boot < 100 or args.n_perm < 100:
        raise UserError("--n-boot and --n-perm: use at least 100 (2000 is the default)")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha}: use a rate between 0 and 1, e.g. 0.05")


def open_any(source: str) -> Run:
    """The run; a behaviour-only run (+sweep=behavior: answers, no patching shards) too."""
    try:
        return open_run(source)
    except UserError:
        from hallu.store.factory import store_at
        from hallu.store.reader import BEHAVIOR_DIRS

        store = store_at(source)
        meta = store.read_meta()
        beh = next((d for d in BEHAVIOR_DIRS if store.table_names(d)), None)
        if meta is None or store.done_shards() or beh is None:
            raise
        noise = store.read_file("noise_floor.json")
        return Run(
            meta.get("run_id", store.run_id),
            meta,
            None,  # type: ignore[arg-type]  # no patching rows
            noise=json.loads(noise) if noise else None,
            behavior=store.read_tables(beh, None, meta.get("behavior_chunks")),
            location=source,
        )


def _make(args: argparse.Namespace, opts: Options) -> tuple[Doc, Path, str]:
    """Build the document and write it; (doc, dir, stem)."""
    only = None if args.compare else mechanism_only(args.run)
    if only is not None:  # +sweep=mechanism alone: no patching shards to open
        out = Path(args.out or args.run)
        card = analyse(None, 0, opts=opts).card  # every criterion "not run"
        scorecard_table(only, card)
        _write(out / "scorecard.json", verdicts.scorecard_json(card))
        _write(out / "report.html", only.html())
        _write(out / "report.md", only.markdown())
        return only, out, "report"
    run = open_any(args.run)
    out = _out_dir(run, args.run, args.out)
    if args.compare:
        other = open_run(args.compare)
        doc = compare_report(run, other, opts)
        stem = f"compare_{other.run_id}"
    else:
        ctx = report_context(run, opts)
        doc, stem = ctx.doc, "report"
        card = verdicts.scorecard_json(ctx.card)
        if rehearsal.is_rehearsal(run.meta):
            card = rehearsal.scorecard_json()
        _write(out / "scorecard.json", card)
    _write(out / f"{stem}.html", doc.html())
    _write(out / f"{stem}.md", doc.markdown())
    return doc, out, stem


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    opts = Options(
        n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed, band=args.band, alpha=args.alpha
    )
    try:
        _check(args)
        doc, out, stem = _make(args, opts)
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"report: {out / (stem + '.html')} and {stem}.md ({doc.n_figures} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`python -m hallu.report MULTIRUN_DIR`: the studies of one multirun, side by side.

For each study (hallu/run/multirun.py wrote their list into multirun.json): the headline band
mean with its interval and the locus, per direction, and the scorecard's verdicts; and one figure
of restoration at the last position against *relative depth* (layer / (layers - 1)), so models
with different numbers of layers line up. Each study's own numbers come from the same analysis as
its single-run report (hallu/analysis); nothing is recomputed differently here. Writes
multirun_report.md, multirun_report.html and multirun_layers.png into the multirun directory.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hallu.errors import UserError

if TYPE_CHECKING:
    from hallu.store.base import Store

INDEX = "multirun.json"

# A direction's column title here; analysis.results.SHORT is its bare "2A"/"2B".
DIRECTION_TITLES = {
    "restore_confidence": "2A restore confidence",
    "induce_tentativeness": "2B induce",
}


@dataclass
class Study:
    run_id: str
    overrides: list[str]
    status: str
    model: str = "?"
    n_layers: int = 0
    stats: Any = None  # hallu.analysis.run_stats.RunStats
    card: list[Any] | None = None  # hallu.analysis.scorecard.Entry


def is_multirun(path: str) -> bool:
    """A multirun folder: local, or `s3://bucket/prefix/<multirun id>` (checked in the bucket)."""
    if path.startswith("s3://"):
        from hallu.store.factory import store_at

        return store_at(path).read_file(INDEX) is not None
    return (Path(path) / INDEX).is_file()


def _analyse(path: str, study: Study, opts: Any) -> None:
    """The study's statistics and scorecard, as its own report computes them."""
    from hallu.analysis import behavior_check, scorecard
    from hallu.analysis.run_stats import analyse
    from hallu.store.reader import n_layers_of, open_run

    run = open_run(path)
    study.n_layers = n_layers_of(run)
    study.model = run.meta.get("config", {}).get("model", {}).get("name_or_path", "?")
    study.stats = analyse(run.table, study.n_layers, run.noise, opts)
    asym = tracking = None
    which = ""
    if run.behavior is not None and behavior_check.label_column(run.behavior) is not None:
        answers, which = behavior_check.answers(run.behavior)
        asym = behavior_check.asymmetry(answers, opts.n_boot, opts.seed)
        tracking = behavior_check.metric_tracking(answers, run.table, opts.n_boot, opts.seed)
    study.card = scorecard.build(study.stats, asym, tracking, run.behavior is not None, which)


def load(root: Store, opts: Any) -> list[Study]:
    index = json.loads(root.read_file(INDEX) or b"{}")
    studies = []
    for s in index.get("studies", []):
        study = Study(s["run_id"], s["overrides"], s["status"])
        if s["status"] == "done":
            _analyse(f"{root.dir}/{s['dir']}", study, opts)
        studies.append(study)
    if not any(s.stats for s in studies):
        raise UserError(f"{root.dir}: no study of this multirun has finished; rerun its command")
    return studies


def _varying(studies: list[Study]) -> list[str]:
    """Each study's overrides that differ between studies (what the multirun swept)."""
    common = set.intersection(*(set(s.overrides) for s in studies))
    return [" ".join(o for o in s.overrides if o not in common) or s.run_id for s in studies]


def _cell_headline(s: Study, d: str) -> str:
    st = s.stats.directions.get(d) if s.stats else None
    return st.headline.fmt() if st is not None and st.headline is not None else "n/a"


def _cell_locus(s: Study, d: str) -> str:
    st = s.stats.directions.get(d) if s.stats else None
    if st is None or st.locus is None:
        return "none"
    depth = max(s.n_layers - 1, 1)
    lo, hi = st.locus.first / depth, st.locus.last / depth
    return f"{lo:.2f}-{hi:.2f} (layers {st.locus.first}-{st.locus.last} of {s.n_layers})"


def tables(studies: list[Study]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table: studies, headline, locus, scorecard."""
    names = _varying(studies)
    head = ["", *names]
    about = [
        ["run", *[s.run_id for s in studies]],
        ["status", *[s.status for s in studies]],
        ["model", *[f"{s.model} ({s.n_layers} layers)" for s in studies]],
    ]
    dirs = list(DIRECTION_TITLES)
    headline = [[DIRECTION_TITLES[d], *[_cell_headline(s, d) for s in studies]] for d in dirs]
    locus = [[DIRECTION_TITLES[d], *[_cell_locus(s, d) for s in studies]] for d in dirs]
    criteria = next(s.card for s in studies if s.card)
    card = []
    for i, e in enumerate(criteria):
        card.append([e.criterion, *[s.card[i].verdict if s.card else "not run" for s in studies]])
    return [
        ("Studies", head, about),
        ("Headline: band-mean restoration at the last position, 95% interval", head, headline),
        ("Locus (relative depth: layer / (layers - 1))", head, locus),
        ("Disconfirmation scorecard, per study", ["criterion", *names], card),
    ]


def figure(studies: list[Study]) -> bytes:
    """Restoration at the last position vs relative depth; one line (and band) per study."""
    import io

    from hallu.report.figures import TITLES, plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, d in zip(axes, DIRECTION_TITLES, strict=True):
        for name, s in zip(_varying(studies), studies, strict=True):
            st = s.stats.directions.get(d) if s.stats else None
            if st is None or st.curve is None:
                continue
            est, lo, hi = st.curve
            x = [layer / max(s.n_layers - 1, 1) for layer in st.grid.layers]
            ax.plot(x, est, marker="o", label=name)
            ax.fill_between(x, lo, hi, alpha=0.15)
        ax.set_title(f"{DIRECTION_TITLES[d]}: {TITLES[d].split(': ')[1]}", fontsize=9)
        ax.set_xlabel("relative depth (layer / (layers - 1))")
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].set_ylabel("restoration at the last position (fraction of the gap)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Restoration at the last prompt token by relative depth, per study (95% bands)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def caption(studies: list[Study]) -> str:
    """What the multirun figure shows: what was patched, where, over how many pairs."""
    pairs = ", ".join(
        f"{name}: {len(next(iter(s.stats.directions.values())).grid.pair_ids)}"
        for name, s in zip(_varying(studies), studies, strict=True)
        if s.stats and s.stats.directions
    )
    return (
        "Figure: resid_pre (the residual stream entering each layer) patched from the source "
        "prompt into the target prompt at the last prompt token; restoration (fraction of the "
        "clean - corrupted gap, ratio of means) against relative depth, so models of different "
        f"depths line up; bands: 95% bootstrap intervals over pairs. Pairs per study: {pairs}."
    )


def _markdown(name: str, tabs: list, text: str = "") -> str:
    out = [f"# hallu multirun report: {name}", ""]
    for title, head, rows in tabs:
        out += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    out += ["![restoration by relative depth](multirun_layers.png)", "", text, ""]
    return "\n".join(out)


def _html(name: str, tabs: list, png: bytes, text: str = "") -> str:
    parts = [f"<h1>hallu multirun report: {html.escape(name)}</h1>"]
    for title, head, rows in tabs:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>{cells}</tr>{body}</table>")
    src = base64.b64encode(png).decode()
    parts.append(f'<img alt="restoration by relative depth" src="data:image/png;base64,{src}">')
    parts.append(f"<p>{html.escape(text)}</p>")
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}"
    return f"<!doctype html><meta charset=utf-8><style>{style}</style>" + "".join(parts)


def write(location: str, opts: Any) -> str:
    """Write the comparative report into the multirun's folder (local or in the bucket)."""
    from hallu.store.factory import store_at

    root = store_at(location)
    studies = load(root, opts)
    tabs = tables(studies)
    png = figure(studies)
    name, text = root.run_id, caption(studies)
    root.write_file("multirun_layers.png", png)
    root.write_file("multirun_report.md", _markdown(name, tabs, text).encode())
    return str(root.write_file("multirun_report.html", _html(name, tabs, png, text).encode()))


def main(argv: list[str]) -> int:
    import argparse
    import sys

    from hallu.analysis.run_stats import Options
    from hallu.errors import EXIT_USER_ERROR

    ap = argparse.ArgumentParser(prog="python -m hallu.report", description=__doc__.split("\n")[0])
    ap.add_argument("multirun", help="a multirun directory (holds multirun.json)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--n-perm", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        out = write(args.multirun, Options(n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed))
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"report: {out} and multirun_report.md")
    return 0

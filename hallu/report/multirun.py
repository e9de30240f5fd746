"""`python -m hallu.report MULTIRUN_DIR`: the studies of one multirun, side by side.

For each study (hallu/run/multirun.py wrote their list into multirun.json): the headline band
mean with its interval and the locus, per direction, and every criterion of its scorecard
(behaviour, 2A vs 2B, locus, controls) with its estimate and interval; the combined reading
(hallu/report/replication.py: models per reading, random-effects summaries, premise check, random
weights); which studies are identical in everything that changes results (`result_identity`);
and one figure of restoration at the last position against *relative depth* (layer / (layers -
1)), so models with different numbers of layers line up. Each study's numbers are its single-run
report's (`hallu.analysis.pipeline.analyse`, via hallu/report/sections.py); only the pooled
summaries are computed here (hallu/analysis/pooling.py). Writes
multirun_report.md, multirun_report.html and multirun_layers.png into the multirun directory.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hallu.errors import UserError

if TYPE_CHECKING:
    from hallu.store.base import Store

INDEX = "multirun.json"

# A direction's column title here; analysis.directions.SHORT is its bare "2A"/"2B".
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
    stats: Any = None  # hallu.analysis.results.Results
    identity: str = ""  # result_identity of its run.json
    weights: str = "pretrained"  # model.weights: random marks a rehearsal

    @property
    def card(self) -> list[Any] | None:
        """The scorecard (hallu.analysis.verdicts.Verdict), as its own scorecard.json holds it."""
        return self.stats.card if self.stats is not None else None


# Where a study's results go and how it is run change no number.
NOT_RESULTS = ("mode", "run_id", "verbose", "cluster", "storage", "protocol")
# How a prompt file is named and its conditions labelled: what the model reads is in the token
# ids (run.json's identity), so two files that give the same tokens give the same study.
PROMPT_NAMING = ("path", "format", "columns", "conditions")


def result_identity(meta: dict[str, Any]) -> str:
    """A hash of everything that changes a study's results: the resolved config less where
    results go and how prompts are named, plus run.json's `identity` (hashes of the token ids the
    model reads, the metric's tokens and the weights). Two studies with one identity hold the
    same numbers; e.g. `prompts=marker_ladder` with its default conditions is `prompts=builtin`.
    """
    cfg = {k: v for k, v in meta.get("config", {}).items() if k not in NOT_RESULTS}
    cfg["model"] = {k: v for k, v in cfg.get("model", {}).items() if k != "cache_dir"}
    cfg["sweep"] = {k: v for k, v in cfg.get("sweep", {}).items() if k != "name"}
    ident = dict(meta.get("identity") or {})
    if ident:
        prompts = cfg.get("prompts", {})
        cfg["prompts"] = {k: v for k, v in prompts.items() if k not in PROMPT_NAMING}
        if "mechanism" not in cfg["sweep"].get("experiments", []):
            ident.pop("prompts", None)  # texts of rungs no patching pair or answer reads
    blob = json.dumps({"config": cfg, "identity": ident}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def is_multirun(path: str) -> bool:
    """A multirun folder: local, or `s3://bucket/prefix/<multirun id>` (checked in the bucket)."""
    if path.startswith("s3://"):
        from hallu.store.factory import store_at

        return store_at(path).read_file(INDEX) is not None
    return (Path(path) / INDEX).is_file()


def _analyse(path: str, study: Study, opts: Any) -> None:
    """The study's results and scorecard, exactly as its own report computes them."""
    from hallu.report.html import open_any
    from hallu.report.sections import analyse_run

    run = open_any(path)
    study.stats = analyse_run(run, opts)
    study.n_layers = study.stats.n_layers
    study.model = run.meta.get("config", {}).get("model", {}).get("name_or_path", "?")
    study.identity = result_identity(run.meta)
    study.weights = run.meta.get("config", {}).get("model", {}).get("weights", "pretrained")


def load(root: Store, opts: Any) -> list[Study]:
    index = json.loads(root.read_file(INDEX) or b"{}")
    studies = []
    for s in index.get("studies", []):
        study = Study(s["run_id"], s["overrides"], s["status"])
        if s["status"] == "done":
            _analyse(f"{root.dir}/{s['dir']}", study, opts)
        studies.append(study)
    if not any(s.stats is not None for s in studies):
        raise UserError(f"{root.dir}: no study of this multirun has finished; rerun its command")
    return studies


def _varying(studies: list[Study]) -> list[str]:
    """Each study's overrides that differ between studies (what the multirun swept)."""
    common = set.intersection(*(set(s.overrides) for s in studies))
    return [" ".join(o for o in s.overrides if o not in common) or s.run_id for s in studies]


def _cell_headline(s: Study, d: str) -> str:
    st = s.stats.directions.get(d) if s.stats else None
    if st is None:
        return "not run"
    used = f" ({len(st.check.used)} of {len(st.grid.pair_ids)} pairs)"
    return (st.headline.fmt() if st.headline is not None else "n/a") + used


def _cell_locus(s: Study, d: str) -> str:
    st = s.stats.directions.get(d) if s.stats else None
    if st is None:
        return "not run"
    if st.locus is None:
        return "none (no layer's restoration interval lies above 0)"
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
    about.append(["results identity", *[s.identity or "n/a" for s in studies]])
    dirs = list(DIRECTION_TITLES)
    headline = [[DIRECTION_TITLES[d], *[_cell_headline(s, d) for s in studies]] for d in dirs]
    locus = [[DIRECTION_TITLES[d], *[_cell_locus(s, d) for s in studies]] for d in dirs]
    from hallu.analysis.scorecard import CRITERIA

    card = [[name, *[_cell_verdict(s, name) for s in studies]] for name in CRITERIA]
    return [
        ("Studies", head, about),
        ("Headline: band-mean restoration at the last position, 95% interval", head, headline),
        ("Locus (relative depth: layer / (layers - 1))", head, locus),
        ("Disconfirmation scorecard, per study", ["criterion", *names], card),
    ]


def _cell_verdict(s: Study, criterion: str) -> str:
    """A criterion's verdict with its estimate, interval and pairs, as scorecard.json has them."""
    if s.card is None:
        return f"not run (study {s.status})"
    e = next((e for e in s.card if e.criterion == criterion), None)
    if e is None:
        return "not run"
    if e.estimate is None:
        return e.verdict
    iv = "" if e.interval is None else f" [{e.interval[0]:.3f}, {e.interval[1]:.3f}]"
    return (
        f"{e.verdict}: {e.estimate:.3f}{iv} ({e.n_pairs_used} pairs used, "
        f"{e.n_pairs_excluded} excluded)"
    )


def identical(studies: list[Study]) -> list[list[str]]:
    """Groups of 2+ finished studies with one result identity (the same study run twice)."""
    names = dict(zip((s.run_id for s in studies), _varying(studies), strict=True))
    by: dict[str, list[str]] = {}
    for s in studies:
        if s.identity:
            by.setdefault(s.identity, []).append(names[s.run_id])
    return [group for group in by.values() if len(group) > 1]


def identity_text(studies: list[Study]) -> str:
    """What the reader must know before comparing columns: which of them are the same study."""
    groups = identical(studies)
    if not groups:
        return (
            "Every study differs in something that changes results (results identity: a hash of "
            "the resolved config, less where results go, and of the prompts' content, token ids "
            "and weights)."
        )
    same = "; ".join(" = ".join(g) for g in groups)
    return (
        f"IDENTICAL STUDIES: {same} are the same study in everything that changes results "
        "(same results identity: resolved config, prompt content, token ids and weights), so "
        "their columns must agree and comparing them shows nothing. Check the overrides: e.g. "
        "a prompt set whose default conditions are the built-in pair is the built-in study."
    )


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
        f"{name}: {len(next(iter(s.stats.directions.values())).check.used)} used"
        for name, s in zip(_varying(studies), studies, strict=True)
        if s.stats and s.stats.directions
    )
    return (
        "Figure: resid_pre (the residual stream entering each layer) patched from the source "
        "prompt into the target prompt at the last prompt token; restoration (fraction of the "
        "clean - corrupted gap, ratio of means) against relative depth, so models of different "
        f"depths line up; bands: 95% bootstrap intervals over pairs. Pairs per study: {pairs}."
    )


def _markdown(name: str, tabs: list, text: str = "", intro: str = "") -> str:
    out = [f"# hallu multirun report: {name}", "", intro, ""]
    for title, head, rows in tabs:
        out += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    out += ["![restoration by relative depth](multirun_layers.png)", "", text, ""]
    return "\n".join(out)


def _html(name: str, tabs: list, png: bytes, text: str = "", intro: str = "") -> str:
    parts = [f"<h1>hallu multirun report: {html.escape(name)}</h1>"]
    parts.append(f"<p>{html.escape(intro)}</p>")
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
    from hallu.report import replication
    from hallu.store.factory import store_at

    root = store_at(location)
    studies = load(root, opts)
    tabs = tables(studies)
    head, rows = replication.combined(studies, opts.level)
    tabs.append(("Combined reading: models per reading, and a random-effects summary", head, rows))
    png = figure(studies)
    named = list(zip(_varying(studies), studies, strict=True))
    parts = (replication.rehearsal_text(named), replication.premise(named), identity_text(studies))
    name, text, intro = root.run_id, caption(studies), " ".join(p for p in parts if p)
    root.write_file("multirun_layers.png", png)
    root.write_file("multirun_report.md", _markdown(name, tabs, text, intro).encode())
    page = _html(name, tabs, png, text, intro)
    return str(root.write_file("multirun_report.html", page.encode()))


def main(argv: list[str]) -> int:
    import argparse
    import sys

    from hallu.analysis.results import Options
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

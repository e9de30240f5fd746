"""The planted model (hallu/engine/planted.py): stored rows equal the construction's values.

Expected values are derived here from the mechanism as docs/analysis.md states it, not from the
model: the marker writes (sign, gain) = (+1, certain_gain) or (-1, uncertain_gain); head
(layer, head) copies the sign to the last position, head (late_layer, late_head) the gain, and
the metric there is sign * gain. A patch changes which prompt each of the two reads sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from hallu.analysis import results, verdicts
from hallu.analysis.groups import groups
from hallu.analysis.pipeline import analyse
from hallu.config import DIRECTIONS, PlantedSpec, compose
from hallu.store.factory import store_at
from hallu.store.reader import n_layers_of, open_run
from hallu.store.schema import anchor_of
from hallu.store.verify import read_verified

L, H, L2, H2 = 2, 1, 4, 3  # hallu/conf/model/planted.yaml
MARKERS = {"definitely": "certain", "probably": "uncertain"}


def _launch(tmp: Path, run_id: str, *args: str) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "hallu.launch",
        "model=planted",
        "sweep.experiments=[patching]",
        f"storage.root={tmp}",
        f"run_id={run_id}",
        *args,
    ]
    done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / run_id


def _reads(condition: str, gains: dict[str, float]) -> tuple[float, float]:
    return (1.0 if condition == "certain" else -1.0), gains[condition]


def expected_patched(row: dict, marker: int, gains: dict[str, float]) -> float:
    """The metric after this cell's patch, from the construction."""
    source, target = DIRECTIONS[row["direction"]]
    sign_t, gain_t = _reads(target, gains)
    sign_s, gain_s = _reads(source, gains)
    last = row["n_tokens"] - 1
    layer, pos, head = row["layer"], row["position"], row["head"]
    sign, gain = sign_t, gain_t
    if row["component"] == "resid_pre":
        if pos == marker:  # both heads read the marker when they run (layers L and L2)
            sign = sign_s if layer <= L else sign_t
            gain = gain_s if layer <= L2 else gain_t
        elif pos == last:  # the last position holds what the heads wrote before `layer`
            sign = sign_s if layer > L else sign_t
            gain = gain_s if layer > L2 else gain_t
    elif row["component"] == "head" and pos == last:
        sign = sign_s if (layer, head) == (L, H) else sign_t
        gain = gain_s if (layer, head) == (L2, H2) else gain_t
    return sign * gain


def _check_rows(run_dir: Path, gains: dict[str, float]) -> int:
    table = read_verified(store_at(run_dir))  # every stored column (open_run keeps a few)
    table = table.filter(pc.equal(table["metric"], "logit_diff"))
    rows = table.to_pylist()
    for r in rows:
        source, target = DIRECTIONS[r["direction"]]
        # the marker-aligned columns point at the marker token
        assert (r["token"] in MARKERS) == (r["position_from_marker"] == 0), r
        assert (r["anchor"], r["anchor_offset"]) != ("marker", 0) or r["token"] in MARKERS
        assert r["clean"] == pytest.approx(_product(source, gains), abs=1e-4)
        assert r["corrupted"] == pytest.approx(_product(target, gains), abs=1e-4)
        want = expected_patched(r, r["marker_position"], gains)
        assert r["patched"] == pytest.approx(want, abs=1e-4), r
    return len(rows)


def _product(condition: str, gains: dict[str, float]) -> float:
    sign, gain = _reads(condition, gains)
    return sign * gain


@pytest.mark.parametrize("gains", [(1.0, 1.0), (1.0, 1.5), (1.0, -0.5)])
def test_resid_pre_rows_match_the_construction(tmp_path: Path, gains: tuple[float, float]):
    """Every row equals the construction's value, for equal, unequal and reversed (< 0) gains."""
    gc, gu = gains
    run = _launch(
        tmp_path,
        "planted",
        "sweep.pairs=3",
        f"model.planted.certain_gain={gc}",
        f"model.planted.uncertain_gain={gu}",
    )
    n = _check_rows(run, {"certain": gc, "uncertain": gu})
    assert n == 3 * 2 * 6 * 13  # pairs x directions x layers x positions: every row checked
    # The pipeline finds what was planted: the band-mean values of docs/analysis.md, the
    # locus starting at the first resid_pre after the copying layer, and the asymmetry verdict.
    stored = open_run(run)
    res = analyse(stored.table, n_layers_of(stored), opts=results.Options(n_boot=200))
    # 3 pairs: under analysis.min_pairs (10), no patching verdict, whatever the numbers.
    for v in verdicts.patching(res)[:2]:
        assert v.verdict == verdicts.INCONCLUSIVE and "fewer than analysis.min_pairs" in v.flags[0]
    res = analyse(stored.table, n_layers_of(stored), opts=results.Options(n_boot=200, min_pairs=2))
    r_2a, r_2b = 2 * gu / (gc + gu), 2 * gc / (gc + gu)
    for d, r in (("restore_confidence", r_2a), ("induce_tentativeness", r_2b)):
        assert res.directions[d].headline.estimate == pytest.approx((2 * r + 1) / 3, abs=1e-4)
        loc = res.directions[d].locus
        # restoration r at layers 3-4 (after the copying layer 2), 1 at layer 5
        assert (loc.first, loc.last) == ((L + 1, 5) if r > 0 else (5, 5))
    d = 2 * (r_2a - r_2b) / 3
    want = verdicts.EQUIVALENT if gc == gu else verdicts.SUPPORTS if d > 0 else verdicts.CONTRADICTS
    assert verdicts.asymmetry(res).verdict == want
    # Positive gains: both directions restore at layers 3-5, a shared locus; a reversed pathway
    # (2A restores negatively at 3-4) leaves 2A only layer 5: edges 2 layers apart.
    shared = verdicts.SUPPORTS if min(gc, gu) > 0 else verdicts.CONTRADICTS
    assert verdicts.locus_shared(res).verdict == shared


@pytest.mark.slow
def test_head_sweep_rows_match_and_the_planted_head_is_top(tmp_path: Path):
    args = ("sweep.pairs=2", "sweep.component=head", "sweep.positions=last:3")
    gains = ("model.planted.uncertain_gain=1.5",)
    run = _launch(tmp_path, "heads", *args, *gains, "metric.extra=[kl_to_clean]")
    assert _check_rows(run, {"certain": 1.0, "uncertain": 1.5}) == 2 * 2 * 6 * 4 * 3
    table = open_run(run).table
    for direction in DIRECTIONS:
        rows = [r for r in table.to_pylist() if r["direction"] == direction]
        top = max(rows, key=lambda r: abs(r["restoration"]))
        assert (top["layer"], top["head"], top["position_from_end"]) == (L, H, -1)
    # Each metric and head on its own; the logit difference's numbers are those of the same run
    # without the extra metric.
    with_kl = groups(table, 6)
    assert len(with_kl) == 2 * 2 * 4  # directions x metrics x heads
    alone = groups(open_run(_launch(tmp_path, "alone", *args, *gains)).table, 6)
    assert [g for g in with_kl if g.key.metric == "logit_diff"] == alone
    for g in alone:
        planted = g.key.head == H
        assert (g.top_layer == L and g.top_position == -1) == planted, g.describe()
        assert planted or abs(g.top_value) < 0.5  # head (4, 3): 0.2; the others 0


def test_anchor_of_labels_each_position_by_its_nearest_template_anchor():
    anchors = {"user": 2, "marker": 7, "user_end": 11, "last": 12}
    labels = [anchor_of(i, anchors) for i in range(13)]
    assert labels[0] == ("start", 0) and labels[1] == ("user", -1)  # a tie goes to the later
    assert labels[5:9] == [("marker", -2), ("marker", -1), ("marker", 0), ("marker", 1)]
    assert labels[11:] == [("user_end", 0), ("last", 0)]
    assert anchor_of(3, {"user": 1, "marker": None, "user_end": 6, "last": 7}) == ("user", 2)


def test_planted_spec_rejects_a_late_layer_before_the_copy():
    with pytest.raises(Exception, match="layer < late_layer < n_layers"):
        PlantedSpec(layer=3, late_layer=2)
    cfg = compose(["model=planted", "model.planted.uncertain_gain=2"])
    assert cfg.model.planted is not None and cfg.model.planted.uncertain_gain == 2.0


@pytest.mark.slow
def test_terminal_summary_report_and_scorecard_print_the_same_headline(tmp_path: Path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hallu.launch",
            "model=planted",
            "sweep.experiments=[patching]",
            "sweep.pairs=12",  # analysis.min_pairs (10) for a verdict
            "sweep.positions=last:3",
            "model.planted.uncertain_gain=1.5",
            f"storage.root={tmp_path}",
            "run_id=same",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "same"
    report = subprocess.run(
        [sys.executable, "-m", "hallu.report", str(run), "--n-boot", "2000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    stored = open_run(run)
    res = analyse(stored.table, n_layers_of(stored))
    lines = [d.headline_text() for d in res.directions.values()]
    assert len(lines) == 2 and lines[0].startswith("2A") and lines[1].startswith("2B")
    summary_md = (run / "summary.md").read_text()
    report_md = (run / "report.md").read_text()
    card = {e["criterion"]: e for e in json.loads((run / "scorecard.json").read_text())}
    asym = card[verdicts.ASYMMETRY]
    for line in lines:  # every direction, word for word, in all four outputs
        assert line in done.stdout.splitlines()
        assert f"- {line}" in summary_md.splitlines()
        assert line in report_md.splitlines()
        assert line in asym["numbers"]
    verdict_line = f"{verdicts.ASYMMETRY}: {asym['verdict']}"
    assert verdict_line in done.stdout and verdict_line in summary_md and verdict_line in report_md
    assert asym["verdict"] == verdicts.SUPPORTS
    assert asym["estimate"] == pytest.approx(res.difference.estimate)

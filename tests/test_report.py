"""The report: renders from stored runs, names every criterion, flags the noise floor, compares."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hallu.analysis import scorecard, verdicts
from hallu.analysis.noise_flags import INSIDE
from hallu.analysis.results import Options
from hallu.report.comparison import compare_report
from hallu.report.html import main
from hallu.report.sections import build_report
from hallu.store import schema
from hallu.store import timing as shard_timing
from hallu.store.factory import store_at
from hallu.store.reader import open_run

from .conftest import tiny_config

FAST = ["--n-boot", "200", "--n-perm", "200"]
CONTROLS = ("same_class", "random_source", "norm_matched")


def make_run(
    root: Path,
    run_id: str,
    n_layers: int = 6,
    n_pairs: int = 16,
    effect: tuple[float, float] = (1.0, 0.7),
    control_effect: float = 0.0,
    gap: float = 2.0,
    noise_floor: float | None = None,
    seed: int = 0,
) -> Path:
    """A stored run with a planted answer: restoration `effect` (2A, 2B) at the last position in
    the upper half of the layers, `control_effect` for every control, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    run = root / run_id
    (run / "shards").mkdir(parents=True)
    cfg = tiny_config(f"model.tiny.n_layers={n_layers}")
    meta = {"run_id": run_id, "config": cfg.model_dump(), "versions": {"hallu": "test"}}
    (run / "run.json").write_text(json.dumps(meta))
    base = rng.normal(0, 0.5, n_pairs)
    gaps = gap + rng.normal(0, 0.1 * abs(gap) + 1e-3, n_pairs)
    positions = range(-4, 0)
    jobs = [
        (d, None, e)
        for d, e in zip(("restore_confidence", "induce_tentativeness"), effect, strict=True)
    ]
    jobs += [(d, c, control_effect) for d, _, _ in jobs[:2] for c in CONTROLS]
    for k, (direction, control, size) in enumerate(jobs):
        sign = 1 if direction == "restore_confidence" else -1
        clean, corrupted = (base + gaps, base) if sign > 0 else (base, base + gaps)
        rows: dict[str, list] = {n: [] for n in schema.SCHEMA.names}
        for p in range(n_pairs):
            for layer in range(n_layers):
                for pfe in positions:
                    r = size if (pfe == -1 and layer >= n_layers // 2) else 0.0
                    g = clean[p] - corrupted[p]
                    patched = corrupted[p] + r * g + rng.normal(0, 0.05)
                    values = {
                        "run_id": run_id,
                        "shard_id": f"s{k}",
                        "model": "tiny",
                        "dtype": "float32",
                        "experiment": "patching",
                        "direction": direction,
                        "component": "resid_pre",
                        "layer": layer,
                        "layer_window": 1,
                        "position": 10 + pfe,
                        "position_from_end": pfe,
                        "token": f"t{pfe}",
                        "n_tokens": 10,
                        "pair_id": f"pair{p:02d}",
                        "metric": "logit_diff",
                        "clean": clean[p],
                        "corrupted": corrupted[p],
                        "patched": patched,
                        "restoration": (patched - corrupted[p]) / g,
                        "seed": 0,
                        "control": control,
                    }
                    for name in schema.SCHEMA.names:
                        rows[name].append(values.get(name))
        table = shard_timing.stamp(schema.to_table(rows), started=1000.0 + k, device="cuda")
        pq.write_table(table, run / "shards" / f"s{k}.parquet")
    if noise_floor is not None:
        (run / "noise_floor.json").write_text(
            json.dumps(
                {
                    "model": "tiny",
                    "device": "cpu",
                    "run_dtype": "bfloat16",
                    "n_prompts": 8,
                    "metric_abs_mean": 1.0,
                    "per_dtype": {},
                    "metric_floor": noise_floor / 2,
                    "gap_floor": noise_floor,
                    "definition": "test floor",
                }
            )
        )
    return run


def _verdicts(run: Path) -> dict[str, str]:
    doc, stats = build_report(open_run(run), Options(n_boot=300, n_perm=300))
    rows = next(v for k, v in doc.blocks if k == "table")[1]
    return {r[0]: r[1] for r in rows}


def test_report_renders_names_every_criterion_and_says_behaviour_was_not_run(tmp_path, capsys):
    run = make_run(tmp_path, "r1")
    assert main([str(run), *FAST]) == 0
    # 2 experiment heatmaps, 3 controls x 2 directions, curves, headlines, noise
    assert capsys.readouterr().out.splitlines()[-1].endswith("report.md (11 figures)")
    md = (run / "report.md").read_text()
    for criterion in scorecard.CRITERIA:
        assert criterion in md, criterion
    assert len(json.loads((run / "scorecard.json").read_text())) == len(scorecard.CRITERIA)
    assert "Behaviour was not run" in md
    card = _verdicts(run)
    assert card[scorecard.BEHAVIOUR_ASYMMETRY] == card[scorecard.TRACKING] == verdicts.NOT_RUN
    html = (run / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 11
    for section in (
        "Headline (the terminal, summary.md and scorecard.json print the same)",
        "Band means over every pair (descriptive)",
        "Locus",
        "Controls",
        "Noise floor",
        "Compute spent",
        "Resolved config",
        "Versions",
    ):
        assert f"## {section}" in md, section
    # 8 shards stamped as cuda, 16 pairs x 6 layers x 4 positions each: GPU-seconds are counted.
    assert "8 of 8 shards timed" in md and "GPU-seconds:" in md


C2A, C2B = f"{verdicts.CONTROLS} (2A)", f"{verdicts.CONTROLS} (2B)"


def test_planted_asymmetry_and_specific_patch_are_found(tmp_path):
    card = _verdicts(make_run(tmp_path, "r", effect=(1.0, 0.7), control_effect=0.0))
    assert card[verdicts.ASYMMETRY] == verdicts.SUPPORTS
    assert card[C2A] == card[C2B] == verdicts.SUPPORTS
    assert card[verdicts.LOCUS] == verdicts.SUPPORTS


def test_no_asymmetry_and_unspecific_patch_are_not_supported(tmp_path):
    card = _verdicts(make_run(tmp_path, "r", effect=(0.8, 0.8), control_effect=0.8))
    assert card[verdicts.ASYMMETRY] in (verdicts.EQUIVALENT, verdicts.INCONCLUSIVE)
    assert card[C2A] != verdicts.SUPPORTS and card[C2B] != verdicts.SUPPORTS


def test_controls_that_restore_more_than_the_patch_contradict(tmp_path):
    card = _verdicts(make_run(tmp_path, "r", effect=(0.3, 0.3), control_effect=1.0))
    assert card[C2A] == card[C2B] == verdicts.CONTRADICTS


def test_ratio_with_gap_inside_the_noise_floor_is_flagged(tmp_path):
    run = make_run(tmp_path, "r", gap=0.01, noise_floor=0.05)
    doc, stats = build_report(open_run(run), Options(n_boot=200, n_perm=200))
    assert all(s.gap_flag == INSIDE for s in stats.directions.values())
    md = doc.markdown()
    headline_rows = [line for line in md.splitlines() if line.startswith("| 2A restore_")]
    assert headline_rows and INSIDE in headline_rows[0]
    card = {r[0]: r[1] for r in next(v for k, v in doc.blocks if k == "table")[1]}
    # every pair's gap is inside the floor: no ratio is a finding, and the verdicts say so
    assert card[verdicts.ASYMMETRY] == card[C2A] == verdicts.INCONCLUSIVE
    assert "16 inside the gap floor (noise floor 0.05)" in md
    # The same run with a floor below its gap is cleared.
    clear = make_run(tmp_path, "clear", gap=2.0, noise_floor=0.05)
    _, stats = build_report(open_run(clear), Options(n_boot=200, n_perm=200))
    assert all(s.gap_flag == "" for s in stats.directions.values())


def test_behaviour_rows_fill_figure_1_and_the_behaviour_criteria(tmp_path):
    """Rows as hallu/behavior/ writes them (behavior/responses/*.parquet); sampled ones used."""
    run = make_run(tmp_path, "r")
    rng = np.random.default_rng(0)
    rows = []
    p_decl = {"certain": 1.0, "neutral": 0.9, "uncertain": 0.4}
    for p in range(16):
        for cond, pr in p_decl.items():
            for decoding in ("sampled", "greedy"):
                label = "declarative" if rng.random() < pr else "tentative"
                if decoding == "greedy":
                    label = "tentative"  # must be ignored: the sampled answers are used
                metric = (1.0 if label == "declarative" else -1.0) + rng.normal(0, 0.3)
                rows.append(
                    {
                        "pair_id": f"pair{p:02d}",
                        "condition": cond,
                        "decoding": decoding,
                        "style_label": label,
                        "metric_value": metric,
                    }
                )
    (run / "behavior" / "responses").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), run / "behavior" / "responses" / "c.parquet")
    card = _verdicts(run)
    # certain moves 0.1 from neutral, uncertain 0.5: against the baseline the asymmetry reverses.
    assert card[scorecard.BEHAVIOUR_ASYMMETRY] == verdicts.CONTRADICTS
    assert card[scorecard.TRACKING] == verdicts.SUPPORTS  # metric separates the labels
    doc, _ = build_report(open_run(run), Options(n_boot=200, n_perm=200))
    md = doc.markdown()
    assert doc.n_figures == 12 and "Behaviour was not run" not in md
    # one answer per prompt, all declarative: rate 1 over 16 prompts whatever the resample
    assert "sampled answers" in md and "| certain | 1.000 [1.000, 1.000] | 16 | 16 |" in md


def test_compare_two_runs_of_different_depth(tmp_path, capsys):
    a = make_run(tmp_path, "a", n_layers=4, effect=(1.0, 1.0))
    b = make_run(tmp_path, "b", n_layers=8, effect=(0.5, 0.5), seed=1)
    doc = compare_report(open_run(a), open_run(b), Options(n_boot=300, n_perm=200))
    assert doc.n_figures == 4  # a difference map and a depth curve per direction
    md = doc.markdown()
    row = next(line for line in md.splitlines() if line.startswith("| 2A |"))
    estimate, lo, hi = (float(x) for x in re.findall(r"-?\d+\.\d+", row.split("|")[4]))
    assert 0.4 < estimate < 0.6 and lo > 0  # A restores 1.0, B 0.5: A - B = 0.5 > 0
    assert main([str(a), "--compare", str(b), *FAST]) == 0
    assert (a / "compare_b.html").stat().st_size > 0 and (a / "compare_b.md").exists()


def test_report_of_a_missing_run_is_one_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no run.json" in err and "Traceback" not in err


def chromium_check(html: Path, tmp_path: Path) -> str:
    """Open the page in headless Chromium; return its title after load, fail on console output."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    proc = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # any JS error or console message
    m = re.search(r"<title>(.*?)</title>", proc.stdout)
    assert m, proc.stdout[:500]
    return m.group(1)


@pytest.mark.slow
def test_html_opens_in_headless_chromium_with_every_figure_decoded(tmp_path):
    run = make_run(tmp_path, "r")
    assert main([str(run), *FAST]) == 0
    assert chromium_check(run / "report.html", tmp_path) == "hallu report ok: 11 figures"


def test_report_reads_a_run_from_s3(moto, tmp_path, monkeypatch, capsys):
    """The same run uploaded to moto's S3 server on 127.0.0.1 (the session's, a bucket of this
    test's own) reports like the local one."""
    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto.url,
    }.items():
        monkeypatch.setenv(k, v)
    bucket = moto.bucket
    run = make_run(tmp_path, "r1", noise_floor=0.01)
    # Uploaded through the store, as a run on S3 is written: shards with their done markers.
    remote_store = store_at(f"s3://{bucket}/runs/r1")
    for path in run.rglob("*"):
        if path.parent.name == "shards":
            remote_store.write_shard(path.stem, pq.read_table(path))
        elif path.is_file():
            remote_store.write_file(str(path.relative_to(run)), path.read_bytes())
    out = tmp_path / "out"
    assert main([f"s3://{bucket}/runs/r1", "--out", str(out), *FAST]) == 0
    remote = (out / "report.md").read_text()
    assert main([str(run), *FAST]) == 0
    local = (run / "report.md").read_text()
    # Same numbers; only the location and the time the report was made differ.
    strip = re.compile(r"from \S+\. Report made \S+")
    assert strip.sub("", remote) == strip.sub("", local)
    assert main([f"s3://{bucket}/runs/missing", "--out", str(out), *FAST]) == 2
    assert "no run.json" in capsys.readouterr().err

"""Every verdict of hallu/analysis/verdicts.py made to happen on synthetic rows, and the grid's
identity keys (no row overwrites another)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest

from hallu.analysis import intervals, locus, results, verdicts
from hallu.analysis.directions import EXPECTED_SIGN
from hallu.analysis.grid import Key, build, keys
from hallu.analysis.pipeline import analyse
from hallu.store import schema

N_LAYERS = 6
POSITIONS = [-2, -1]  # the effect sits at the last position; -2 restores nothing


def _rows(
    direction: str,
    clean: np.ndarray,
    corrupted: np.ndarray,
    patched: np.ndarray,
    step: float = 1e-6,
    **identity: object,
) -> list[dict]:
    """patched [n_pairs, n_layers]: rows at the last position for every pair and layer."""
    out = []
    for i, (c, k) in enumerate(zip(clean, corrupted, strict=True)):
        for layer, pfe in ((lay, pfe) for lay in range(patched.shape[1]) for pfe in POSITIONS):
            row = dict.fromkeys(schema.SCHEMA.names)
            row.update(
                direction=direction,
                metric="logit_diff",
                component="resid_pre",
                layer_window=1,
                pair_id=f"p{i:02d}",
                layer=layer,
                position=10 + pfe,
                position_from_end=pfe,
                clean=float(c),
                corrupted=float(k),
                patched=float(patched[i, layer]) if pfe == -1 else float(k),
                resolution=step,
            )
            row.update(identity)
            out.append(row)
    return out


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.SCHEMA)


def _direction(
    direction: str, restoration: np.ndarray, gap: np.ndarray, step: float = 1e-6, band=(3, 6)
) -> list[dict]:
    """Restoration [n_pairs] in the band layers, 0 below; clean/corrupted with the given gaps."""
    sign = EXPECTED_SIGN[direction]
    corrupted = -sign * gap / 2
    clean = corrupted + sign * gap
    patched = np.repeat(corrupted[:, None], N_LAYERS, axis=1)
    for layer in range(*band):
        patched[:, layer] = corrupted + restoration * (clean - corrupted)
    return _rows(direction, clean, corrupted, patched, step)


def _noise(floor: float | None) -> dict | None:
    return None if floor is None else {"gap_floor": floor}


def _compute(a: np.ndarray, b: np.ndarray, gap=None, step=1e-6, floor=None, **kw):
    n = len(a)
    gap = np.full(n, 2.0) if gap is None else gap
    rows = _direction("restore_confidence", a, gap, step, kw.pop("band_a", (3, 6)))
    rows += _direction("induce_tentativeness", b, gap, step, kw.pop("band_b", (3, 6)))
    return analyse(_table(rows), N_LAYERS, _noise(floor), opts=results.Options(n_boot=500, **kw))


RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        (1.0, 0.6, verdicts.SUPPORTS),
        (0.6, 1.0, verdicts.CONTRADICTS),
        (0.9, 0.9, verdicts.EQUIVALENT),
        (0.95, 0.9, verdicts.INCONCLUSIVE),
    ],
)
def test_asymmetry_returns_each_verdict(a: float, b: float, want: str):
    noise = 0.2 if want == verdicts.INCONCLUSIVE else 0.01
    res = _compute(a + noise * RNG.standard_normal(24), b + noise * RNG.standard_normal(24))
    v = verdicts.asymmetry(res)
    assert v.verdict == want, v.numbers
    assert v.n_pairs_used == 24 and v.n_pairs_excluded == 0
    assert v.estimate == pytest.approx(a - b, abs=0.1)


def test_asymmetry_not_run_without_both_directions():
    rows = _direction("restore_confidence", np.ones(5), np.full(5, 2.0))
    res = analyse(_table(rows), N_LAYERS, opts=results.Options(n_boot=100))
    assert verdicts.asymmetry(res).verdict == verdicts.NOT_RUN


def test_seed_like_difference_of_one_bf16_step_is_never_supports():
    """Gap 0.172 logits, 1.000 vs 0.909, logits near 10 in bf16 (step 0.0625): the difference
    is 0.091 restoration units, a quarter of one rounding step (0.0625 / 0.172 = 0.36)."""
    n = 48
    res = _compute(np.ones(n), np.full(n, 0.909), gap=np.full(n, 0.172), step=0.0625)
    v = verdicts.asymmetry(res)
    assert v.verdict == verdicts.INCONCLUSIVE
    assert res.margin == 0.05  # the instrument never widens the margin
    assert res.instrument["resolution"] == pytest.approx(0.0625 / 0.172)
    assert any(f.startswith(verdicts.RESOLUTION) for f in v.flags)
    assert any("coarser than the margin" in s for s in verdicts.limits({}, res))


@pytest.mark.parametrize("true_difference", [0.0, 0.09, 0.20, 0.30, 0.35])
def test_a_coarse_instrument_never_makes_equivalent(true_difference: float):
    """Issue 23: gap 0.172, bf16 step 0.0625, each pair measured to +-0.007. The old margin (the
    largest of 0.05, step / gap = 0.36 and floor / gap) called all of these `equivalent`; the
    instrument cannot see them, so now none is. The same rows with a fine instrument are
    `supports` beyond the margin and `equivalent` at 0."""
    n = 48
    a = 1.0 + 0.007 * RNG.standard_normal(n)
    b = 1.0 - true_difference + 0.007 * RNG.standard_normal(n)
    gap = np.full(n, 0.172)
    coarse = verdicts.asymmetry(_compute(a, b, gap=gap, step=0.0625))
    assert coarse.verdict == verdicts.INCONCLUSIVE
    assert any(f.startswith(verdicts.RESOLUTION) for f in coarse.flags)
    fine = verdicts.asymmetry(_compute(a, b, gap=gap, step=1e-6))
    want = verdicts.EQUIVALENT if true_difference == 0 else verdicts.SUPPORTS
    assert fine.verdict == want, fine.numbers
    lo, hi = fine.interval
    if fine.verdict == verdicts.EQUIVALENT:  # equivalent: the interval inside +-margin
        assert -0.05 < lo and hi < 0.05


def test_a_measured_noise_floor_above_the_margin_is_inconclusive():
    a, b = np.full(24, 1.0), np.full(24, 1.0)  # no difference, exactly
    assert verdicts.asymmetry(_compute(a, b)).verdict == verdicts.EQUIVALENT
    v = verdicts.asymmetry(_compute(a, b, floor=0.2))  # 0.2 / 2.0 = 0.1 > 0.05
    assert v.verdict == verdicts.INCONCLUSIVE and "noise floor 0.1" in v.flags[0]


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_fewer_pairs_than_min_pairs_give_no_verdict(n: int):
    """A clear difference over n < analysis.min_pairs pairs is inconclusive; lowering the key
    lets the same rows decide."""
    a, b = 1.0 + 0.01 * RNG.standard_normal(n), 0.5 + 0.01 * RNG.standard_normal(n)
    v = verdicts.asymmetry(_compute(a, b))
    assert v.verdict == verdicts.INCONCLUSIVE and "fewer than analysis.min_pairs 10" in v.flags[0]
    assert verdicts.asymmetry(_compute(a, b, min_pairs=2)).verdict == verdicts.SUPPORTS


def _swapped(n_swapped: int, n: int = 12, a: float = 1.2, b: float = 0.8) -> results.Results:
    """Planted 1/1.5 (2A 1.2, 2B 0.8 at every band layer) with certain and uncertain swapped in
    the first `n_swapped` pairs: their gap has the wrong sign in both directions."""
    gap = np.full(n, 2.5)
    gap[:n_swapped] *= -1
    return _compute(np.full(n, a), np.full(n, b), gap=gap)


def test_a_broken_premise_blocks_every_patching_verdict():
    """Issue 23: with 5 of 12 pairs swapped the old rules said `supports` from the 7 left."""
    ok = verdicts.asymmetry(_swapped(0))
    assert ok.verdict == verdicts.SUPPORTS
    res = _swapped(5)
    for v in verdicts.patching(res)[:2]:
        assert v.verdict == verdicts.INCONCLUSIVE, v.criterion
        fails = [f for f in v.flags if f.startswith(verdicts.PREMISE_FAILS)]
        assert any("excludes 5 of 12 pairs (42%: 5 wrong sign" in f for f in fails)
    # 2 of 12 (17%) stays under analysis.max_excluded_share 0.2, with the gap clearly positive
    assert verdicts.asymmetry(_swapped(2)).verdict == verdicts.SUPPORTS
    # a stricter share blocks it, naming the key
    res = _compute(np.full(12, 1.2), np.full(12, 0.8), gap=_swapped_gap(2), max_excluded_share=0.1)
    assert "analysis.max_excluded_share 10%" in verdicts.asymmetry(res).flags[0]


def _swapped_gap(k: int, n: int = 12) -> np.ndarray:
    gap = np.full(n, 2.5)
    gap[:k] *= -1
    return gap


def test_a_gap_on_the_wrong_side_over_all_pairs_fails_the_premise():
    """Most pairs' gaps point the wrong way (toy +protocol=seed: all-pairs 2A gap -0.63): no
    verdict from the few that agree, even when the excluded share is allowed."""
    gap = _swapped_gap(9, 12)
    res = _compute(np.full(12, 1.2), np.full(12, 0.8), gap=gap, max_excluded_share=1.0, min_pairs=2)
    p = res.directions["restore_confidence"].premise
    assert p is not None and not p.holds and p.gap.estimate < 0 and not p.gap.lo > 0
    v = verdicts.asymmetry(res)
    assert v.verdict == verdicts.INCONCLUSIVE and "not above 0" in v.flags[0]


def test_pairs_with_the_wrong_sign_or_inside_the_floor_are_excluded_and_counted():
    gap = np.array([2.0] * 8 + [-1.0, -2.0, 0.01])  # 2 wrong sign, 1 inside a floor of 0.05
    r = np.array([1.0] * 8 + [30.0, -20.0, 500.0])  # wild ratios the excluded pairs would add
    res = _compute(r, r, gap=gap, floor=0.05)
    for d in res.directions.values():
        assert d.check.count(results.WRONG_SIGN) == 2 and d.check.count(results.INSIDE_FLOOR) == 1
        assert len(d.check.used) == 8 and d.headline.estimate == pytest.approx(1.0)
    v = verdicts.asymmetry(res)
    assert (v.n_pairs_used, v.n_pairs_excluded) == (8, 3)
    assert any("wrong sign" in f for f in v.flags)


def test_estimator_disagreement_is_flagged():
    # One pair with a tiny (but above-floor) gap and a large ratio drags the mean of ratios.
    gap = np.array([2.0] * 9 + [0.01])
    r = np.array([0.1] * 9 + [-60.0])
    res = _compute(r, r, gap=gap)
    d = res.directions["restore_confidence"]
    assert d.headline.estimate > 0 > d.mean_of_ratios.estimate
    assert any("differ in sign" in f for f in d.flags)
    calm = _compute(np.full(10, 0.5), np.full(10, 0.5)).directions["restore_confidence"]
    assert not calm.flags


@pytest.mark.parametrize(
    ("band_a", "band_b", "noise", "want"),
    [
        ((3, 6), (3, 6), 0.01, verdicts.SUPPORTS),
        ((3, 6), (4, 6), 0.01, verdicts.SUPPORTS),  # one edge 1 layer apart: under the margin 2
        ((0, 2), (4, 6), 0.01, verdicts.CONTRADICTS),
        ((2, 4), (4, 6), 0.01, verdicts.CONTRADICTS),  # issue 23: layers 2-3 vs 4-5, disjoint
        ((3, 6), (3, 6), 3.0, verdicts.INCONCLUSIVE),  # no layer measurably restores
    ],
)
def test_locus_returns_each_verdict(band_a, band_b, noise, want):
    n = 12
    a = 0.3 + noise * RNG.standard_normal(n)
    res = _compute(a, 0.3 + noise * RNG.standard_normal(n), band_a=band_a, band_b=band_b)
    assert verdicts.locus_shared(res).verdict == want


def test_disjoint_bands_are_never_shared_over_repeated_draws():
    """Issue 23: bands 2-3 vs 4-5 came out `supports` in 9-11 of 15 runs; now in none."""
    out = set()
    for _ in range(15):
        a, b = 0.5 + 0.3 * RNG.standard_normal(12), 0.5 + 0.3 * RNG.standard_normal(12)
        out.add(verdicts.locus_shared(_compute(a, b, band_a=(2, 4), band_b=(4, 6))).verdict)
    assert verdicts.SUPPORTS not in out


def test_locus_edges_do_not_follow_effect_size():
    """One direction's effect 20 times the other's, same layers: shared."""
    a, b = 1.0 + 0.01 * RNG.standard_normal(12), 0.05 + 0.01 * RNG.standard_normal(12)
    res = _compute(a, b)
    assert [res.directions[d].locus.first for d in res.directions] == [3, 3]
    assert verdicts.locus_shared(res).verdict == verdicts.SUPPORTS


def test_locus_from_few_pairs_is_inconclusive():
    """Issue 23: toy last:4 with 4 pairs gave `supports` (wide intervals overlap)."""
    res = _compute(np.full(4, 0.5), np.full(4, 0.5))
    v = verdicts.locus_shared(res)
    assert v.verdict == verdicts.INCONCLUSIVE and "fewer than analysis.min_pairs" in v.flags[0]


def test_locus_from_a_single_position_is_inconclusive(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "POSITIONS", [-1])
    res = _compute(np.full(12, 0.5), np.full(12, 0.5))
    v = verdicts.locus_shared(res)
    assert v.verdict == verdicts.INCONCLUSIVE and "one position" in v.flags[-1]


def test_locus_without_a_positive_effect_is_inconclusive_and_not_run_without_a_direction():
    v = verdicts.locus_shared(_compute(np.zeros(12), np.zeros(12)))
    assert v.verdict == verdicts.INCONCLUSIVE
    assert any("no layer's restoration interval lies above 0" in f for f in v.flags)
    rows = _direction("restore_confidence", np.ones(12), np.full(12, 2.0))
    res = analyse(_table(rows), N_LAYERS, opts=results.Options(n_boot=100))
    assert verdicts.locus_shared(res).verdict == verdicts.NOT_RUN


def test_locus_intervals_weight_pairs_as_repeated_pairs():
    """A resample's weights (pair counts) give the same per-layer ratio and t interval as the
    resampled pairs written out, and all-ones weights give intervals.ratio layer by layer."""
    rng = np.random.default_rng(1)
    num, gap = rng.standard_normal((7, 4)) + 1.0, rng.uniform(1.0, 3.0, 7)
    num[2, 1] = np.nan  # an absent cell
    counts = np.array([[2, 0, 1, 3, 0, 1, 0]], dtype=float)
    est, lo = locus.layer_intervals(num, gap, counts, 0.95)
    rep = np.repeat(np.arange(7), counts[0].astype(int))
    for i in range(4):
        want = intervals.ratio(num[rep, i], gap[rep], 0.95)
        assert est[0, i] == pytest.approx(want.estimate) and lo[0, i] == pytest.approx(want.lo)
        want = intervals.ratio(num[:, i], gap, 0.95)
        est1, lo1 = locus.layer_intervals(num, gap, np.ones((1, 7)), 0.95)
        assert est1[0, i] == pytest.approx(want.estimate) and lo1[0, i] == pytest.approx(want.lo)


def test_disjoint_bands_on_eight_layers_contradict_with_intervals_outside_the_margin(
    monkeypatch,
):
    monkeypatch.setattr(sys.modules[__name__], "N_LAYERS", 8)
    rng = np.random.default_rng(2)
    a, b = 0.5 + 0.01 * rng.standard_normal(12), 0.5 + 0.01 * rng.standard_normal(12)
    res = _compute(a, b, band_a=(2, 4), band_b=(6, 8))
    v = verdicts.locus_shared(res)
    assert v.verdict == verdicts.CONTRADICTS and v.interval is not None
    assert v.estimate == 4 and v.interval[0] >= 2  # first layer 6 - 2, every resample
    assert "last layer 4.0 [4.0, 4.0]" in v.numbers


def _profile_rows(
    direction: str, profile: np.ndarray, noise: float, n: int, rng: np.random.Generator
) -> list[dict]:
    """Per-layer restoration `profile` plus per-pair noise at every layer; gap 2."""
    sign = EXPECTED_SIGN[direction]
    corrupted, gap = np.full(n, -sign), np.full(n, 2.0 * sign)
    r = profile[None, :] + noise * rng.standard_normal((n, len(profile)))
    return _rows(direction, corrupted + gap, corrupted, corrupted[:, None] + r * gap[:, None])


def test_edges_that_agree_only_at_the_point_are_not_called_shared():
    """Layer 2 restores about as much as its noise, so whether it joins a band changes from
    resample to resample. With analysis.locus_margin_layers 1 (any shift counts) the former rule
    said `supports` whenever the point edges agreed; the equivalence test never does here."""
    point_equal, verdicts_seen, rng = 0, set(), np.random.default_rng(3)
    for _ in range(6):
        profile = np.array([0.0, 0.0, 0.3, 1.0, 1.0, 1.0])
        rows = _profile_rows("restore_confidence", profile, 0.5, 12, rng)
        rows += _profile_rows("induce_tentativeness", profile, 0.5, 12, rng)
        opts = results.Options(n_boot=500, min_pairs=2, locus_margin_layers=1)
        res = analyse(_table(rows), N_LAYERS, opts=opts)
        a, b = (d.locus for d in res.directions.values())
        point_equal += (a.first, a.last) == (b.first, b.last)
        verdicts_seen.add(verdicts.locus_shared(res).verdict)
    assert point_equal >= 1 and verdicts_seen == {verdicts.INCONCLUSIVE}


def test_few_noisy_pairs_never_support_a_shared_locus():
    """With min_pairs lowered out of the way, 5 pairs with layer-by-layer noise (the same true
    band 3-5 in both directions) still cannot make `supports`."""
    out, rng = set(), np.random.default_rng(4)
    for _ in range(10):
        profile = np.array([0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
        rows = _profile_rows("restore_confidence", profile, 0.4, 5, rng)
        rows += _profile_rows("induce_tentativeness", profile, 0.4, 5, rng)
        res = analyse(_table(rows), N_LAYERS, opts=results.Options(n_boot=500, min_pairs=2))
        out.add(verdicts.locus_shared(res).verdict)
    assert out == {verdicts.INCONCLUSIVE}


def test_grids_key_on_every_identity_column_and_refuse_overwrites():
    g = np.full(4, 2.0)
    base = _direction("restore_confidence", np.full(4, 0.5), g)
    kl = [{**r, "metric": "kl_to_clean", "patched": 99.0} for r in base]
    heads = [
        {**r, "component": "head", "head": h, "patched": float(h)} for r in base for h in (0, 1)
    ]
    table = _table(base + kl + heads)
    assert len(keys(table)) == 4
    main = build(table, "restore_confidence")
    assert main is not None and np.nanmax(main.patched) < 99  # the KL rows did not land here
    h1 = build(table, Key("restore_confidence", component="head", head=1))
    assert h1 is not None and np.all(h1.patched == 1.0)
    with pytest.raises(ValueError, match="repeat a"):
        build(_table(base + base), "restore_confidence")


def _with_control(control_restoration: np.ndarray, noise: float = 0.0) -> results.Results:
    n = len(control_restoration)
    gap = np.full(n, 2.0)
    rows = _direction("restore_confidence", np.full(n, 0.8), gap)
    ctrl = _direction("restore_confidence", control_restoration, gap)
    for r in ctrl:  # the control's own source sits at +0.5, not at the real clean (+1)
        r.update(control="same_class", clean=0.5, patched=r["patched"] + noise * RNG.normal())
    return analyse(_table(rows + ctrl), N_LAYERS, opts=results.Options(n_boot=300))


@pytest.mark.parametrize(
    ("control", "noise", "want"),
    [
        (0.0, 0.01, verdicts.SUPPORTS),
        (1.2, 0.01, verdicts.CONTRADICTS),
        (-1.5, 0.01, verdicts.CONTRADICTS),  # moves the metric further the other way
        (-0.3, 0.01, verdicts.SUPPORTS),  # the other way, less far than the real patch
        (0.8, 3.0, verdicts.INCONCLUSIVE),
    ],
)
def test_controls_return_each_verdict_per_direction(control, noise, want):
    res = _with_control(np.full(16, control), noise)
    v = verdicts.controls(res, "restore_confidence")
    assert v.verdict == want, v.numbers
    c = res.directions["restore_confidence"].controls["same_class"]
    # patched = corrupted + control x 2 logits; toward the own source: that change / 1.5 logits
    assert c.change.estimate == pytest.approx(2 * control, abs=1.0)
    assert c.real_change.estimate == pytest.approx(1.6, abs=1e-6)
    assert c.real_fraction.estimate == pytest.approx(0.8, abs=1e-6)
    if noise < 0.1:
        assert c.toward_own.estimate == pytest.approx(2 * control / 1.5, abs=0.05)
        assert c.excess.estimate == pytest.approx(1.6 - abs(2 * control), abs=0.05)
    # the scorecard states each control as the table does
    assert verdicts.control_line(c, verdicts.control_side(c.excess, 0.0)).split(";")[0] in v.numbers
    assert verdicts.controls(res, "induce_tentativeness").verdict == verdicts.NOT_RUN


def test_controls_not_run_without_control_rows():
    res = _compute(np.ones(5), np.ones(5))
    assert verdicts.controls(res, "restore_confidence").verdict == verdicts.NOT_RUN


def _answers(p_decl: dict[str, float], n_pairs: int = 20, n_samples: int = 4) -> pa.Table:
    rows = []
    for p in range(n_pairs):
        for cond, pr in p_decl.items():
            for s in range(n_samples):
                decl = RNG.random() < pr
                # within a condition the metric tracks the answer only for 'certain'
                lean = (1.0 if decl else -1.0) if cond == "certain" else 0.0
                metric = {"certain": 2.0, "neutral": 0.0, "uncertain": -2.0}[cond] + lean
                rows.append(
                    {
                        "pair_id": f"p{p:02d}",
                        "condition": cond,
                        "decoding": "sampled",
                        "sample": s,
                        "style_label": "declarative" if decl else "tentative",
                        "metric_value": metric + 0.1 * RNG.normal(),
                    }
                )
    return pa.Table.from_pylist(rows)


def test_behaviour_rates_count_each_prompt_once_and_auroc_is_also_within_condition():
    from hallu.analysis import behavior_rates

    beh = _answers({"certain": 0.7, "neutral": 0.5, "uncertain": 0.2})
    rates = behavior_rates.prompt_rates(beh, n_boot=300)
    for cond, r in rates.items():
        assert (r.n_prompts, r.n_answers) == (20, 80)
        sub = beh.filter(pa.compute.equal(beh["condition"], cond)).to_pylist()
        per_prompt = [
            np.mean([a["style_label"] == "declarative" for a in sub if a["pair_id"] == p])
            for p in sorted({a["pair_id"] for a in sub})
        ]
        assert r.rate.estimate == pytest.approx(np.mean(per_prompt))
        assert r.rate.lo < r.rate.estimate < r.rate.hi
    auc = behavior_rates.tracking(beh, n_boot=200)
    assert auc["pooled"].lo > 0.6  # pooled: the condition drives both
    assert auc["certain"].estimate > 0.95  # within 'certain' the metric follows the answer
    assert auc["neutral"].lo < 0.5 < auc["neutral"].hi  # within 'neutral' it does not


def _condition_only(beh: pa.Table) -> pa.Table:
    """The metric replaced by +1 / 0 / -1 by condition: it encodes the condition and nothing
    of the answer."""
    code = {"certain": 1.0, "neutral": 0.0, "uncertain": -1.0}
    values = pa.array([code[c] for c in beh["condition"].to_pylist()])
    return beh.set_column(beh.column_names.index("metric_value"), "metric_value", values)


def _card(beh: pa.Table, **kw) -> dict[str, verdicts.Verdict]:
    res = analyse(None, 0, behavior=beh, opts=results.Options(n_boot=300, **kw))
    return {v.criterion: v for v in res.card}


def test_tracking_is_decided_within_conditions_and_the_pooled_number_never_decides():
    """Issue 23: a metric of +1/-1/0 by condition got pooled AUROC 0.776 and `supports`."""
    from hallu.analysis.scorecard import TRACKING

    beh = _answers({"certain": 0.7, "neutral": 0.5, "uncertain": 0.2})
    real = _card(beh)[TRACKING]
    assert real.verdict == verdicts.SUPPORTS and "pooled AUROC" in real.numbers
    fake = _card(_condition_only(beh))[TRACKING]
    assert fake.estimate == pytest.approx(0.5) and fake.verdict == verdicts.INCONCLUSIVE
    pooled = float(fake.numbers.split("pooled AUROC ")[1].split()[0])
    assert pooled > 0.7  # what the old rule decided on
    # tracking the wrong way within conditions contradicts
    flipped = beh.set_column(
        beh.column_names.index("metric_value"),
        "metric_value",
        pa.compute.negate(beh["metric_value"]),
    )
    assert _card(flipped)[TRACKING].verdict == verdicts.CONTRADICTS


def test_behaviour_verdicts_need_min_pairs_claims():
    from hallu.analysis.scorecard import BEHAVIOUR_ASYMMETRY, TRACKING

    beh = _answers({"certain": 0.95, "neutral": 0.5, "uncertain": 0.45}, n_pairs=6)
    card = _card(beh)
    for name in (BEHAVIOUR_ASYMMETRY, TRACKING):
        assert card[name].verdict == verdicts.INCONCLUSIVE
        assert "6 claims, fewer than analysis.min_pairs 10" in card[name].flags
    big = _card(_answers({"certain": 0.95, "neutral": 0.5, "uncertain": 0.45}, n_pairs=30))
    assert big[BEHAVIOUR_ASYMMETRY].verdict == verdicts.SUPPORTS

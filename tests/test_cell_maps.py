"""Heatmap grids (hallu/analysis/cell_maps.py): one per identity, columns aligned on the template
anchors and the marker, ticks naming what every pair has there, max-T on the same columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hallu.analysis import cell_maps
from hallu.analysis.grid import Key
from hallu.report.figures import heatmap
from hallu.report.summary import describe_map, map_file
from hallu.store import schema

N_LAYERS = 3
CLAIMS = [["the", "sky", "is"], ["water", "is"], ["a", "b", "c", "d"]] * 4  # 12 pairs
TAILS = [["blue"], ["wet", "stuff"], ["e", "f", "g"]] * 4


def _prompt(claim: list[str], tail: list[str]) -> tuple[list[str], dict[str, int]]:
    """<s> [INST] claim MARKER tail , right ? [/INST]: anchors as prompts.prompt_anchors."""
    toks = ["<s>", "[INST]", *claim, "probably", *tail, ",", "right", "?", "[/INST]"]
    marker = 2 + len(claim)
    return toks, {"user": 2, "marker": marker, "user_end": len(toks) - 2, "last": len(toks) - 1}


def _rows(effect_at: str = "marker", size: float = 1.0, noise: float = 0.05, **extra) -> list:
    """2A rows: the patch restores `size` of the gap at the marker (or at 'end': 3 from the end)
    in every layer, plus noise; nothing elsewhere."""
    rng = np.random.default_rng(0)
    rows = []
    for p, (claim, tail) in enumerate(zip(CLAIMS, TAILS, strict=True)):
        toks, anchors = _prompt(claim, tail)
        target = anchors["marker"] if effect_at == "marker" else len(toks) - 3
        for layer in range(N_LAYERS):
            for pos in range(len(toks)):
                r = size if pos == target else 0.0
                f = schema.cell_fields(
                    f"p{p:02d}", pos, pos, toks, toks, 1.0, 0.0, r + noise * rng.normal(), anchors
                )
                rows.append(
                    {
                        **f,
                        "direction": "restore_confidence",
                        "component": "resid_pre",
                        "layer": layer,
                        "layer_window": 1,
                        "metric": "logit_diff",
                        **extra,
                    }
                )
    return rows


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.SCHEMA)


def test_columns_align_on_the_marker_and_name_every_pairs_token():
    (m,) = cell_maps.maps(_table(_rows()), n_perm=500)
    assert m.align == "anchor" and m.n_pairs == 12
    # The marker sits 6, 7 and 8 tokens from the end: counted from the end it is 3 columns.
    j = m.labels.index("marker 'probably'")
    assert np.allclose(m.estimate[:, j], 1.0, atol=0.05)
    assert np.allclose(np.delete(m.estimate, j, axis=1), 0.0, atol=0.05)
    assert "last '[/INST]'" in m.labels and "user (varies)" in m.labels  # 'the'/'water'/'a'
    assert "marker-2 'c' 4/12" in m.labels  # only the four-word claims reach it
    # max-T on the same columns: the marker column, and nothing else, in every layer
    assert m.significant[:, j].all() and m.significant.sum() == N_LAYERS


def test_the_test_counted_from_the_end_misses_what_the_marker_columns_find():
    table = _table(_rows(noise=0.3))
    table = table.drop_columns(["anchor", "anchor_offset"])  # a run stored before anchors
    (end,) = cell_maps.maps(table, n_perm=500)
    assert end.align == "end"
    (anchored,) = cell_maps.maps(_table(_rows(noise=0.3)), n_perm=500)
    # 4 of 12 pairs per end column: diluted to a third, and fewer pairs carry each cell
    assert np.nanmax(end.estimate) < 0.5 < np.nanmin(anchored.estimate.max(axis=1))
    assert anchored.significant.sum() > end.significant.sum()


def test_one_map_per_identity_and_no_row_overwrites_another():
    base = _rows()
    kl = [
        {**r, "metric": "kl_to_clean", "clean": 0.0, "corrupted": 5.0, "patched": 4.0} for r in base
    ]
    heads = [
        {**r, "component": "head", "head": h, "patched": float(h) * r["patched"]}
        for r in base
        for h in (0, 1)
    ]
    table = _table(base + kl + heads)
    maps = {m.key: m for m in cell_maps.maps(table, n_perm=200)}
    main = Key("restore_confidence")
    assert set(maps) == {
        main,
        Key("restore_confidence", metric="kl_to_clean"),
        Key("restore_confidence", component="head", head=0),
        Key("restore_confidence", component="head", head=1),
    }
    # the logit_diff map equals the map of the same rows without the extra metric and heads
    (alone,) = cell_maps.maps(_table(base), n_perm=200)
    assert np.array_equal(maps[main].estimate, alone.estimate, equal_nan=True)
    assert np.allclose(maps[Key("restore_confidence", metric="kl_to_clean")].estimate, 0.2)
    h0 = maps[Key("restore_confidence", component="head", head=0)]
    assert np.allclose(h0.estimate, 0.0)

    described = [describe_map(m) for m in maps.values()]
    files = [d["file"] for d in described]
    assert len(set(files)) == 4 and map_file(main) == "heatmap_restore_confidence.png"
    kl_map = next(d for d in described if d["key"]["metric"] == "kl_to_clean")
    assert kl_map["mean_restoration"][0][0] == 0.2
    for m in maps.values():  # each draws on its own, titled with its identity
        assert heatmap(m, 2)[:4] == b"\x89PNG"


def test_an_exact_effect_in_every_pair_is_significant_and_an_exact_zero_is_not():
    # A model built by hand moves every pair by exactly the same amount: t = c / 0 is the largest
    # effect there is (it once counted as none); cells where nothing moves stay at t = 0.
    (m,) = cell_maps.maps(_table(_rows(noise=0.0)), n_perm=500)
    j = m.labels.index("marker 'probably'")
    assert m.significant[:, j].all() and m.significant.sum() == N_LAYERS

"""`-m`: one study per combination, an index, and one comparative report."""

from __future__ import annotations

import json

import pytest

from hallu.run.multirun import expand, label

from .conftest import run_module

SMALL = ["model=tiny", "metric=is_vs_might", "model.tiny.d_model=32", "model.tiny.d_mlp=64",
         "sweep.experiments=[patching]", "sweep.positions=last:2", "sweep.pairs=4"]  # fmt: skip


def test_expand_is_hydras_cartesian_product():
    studies, varying = expand(["model=tiny,toy", "prompts=builtin,file", "seed=1"])
    assert varying == ["model", "prompts"]
    assert [s[:2] for s in studies] == [
        ["model=tiny", "prompts=builtin"],
        ["model=tiny", "prompts=file"],
        ["model=toy", "prompts=builtin"],
        ["model=toy", "prompts=file"],
    ]
    assert label(1, studies[1], varying) == "1-model-tiny.prompts-file"


@pytest.mark.slow
def test_multirun_of_two_studies_and_its_comparative_report(run_cli, tmp_path):
    # Two models of different depth: the report lines their layers up by relative depth.
    out = run_cli("-m", *SMALL, "model.tiny.n_layers=2,4", "run_id=mr", tiny=False)
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "runs" / "mr"
    index = json.loads((root / "multirun.json").read_text())
    assert [s["status"] for s in index["studies"]] == ["done", "done"]
    for s in index["studies"]:
        assert (root / s["dir"] / "run.json").is_file()
    rep = run_module("hallu.report", str(root), "--n-boot", "200", "--n-perm", "200")
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (root / "multirun_report.md").read_text()
    assert "| model.tiny.n_layers=2 | model.tiny.n_layers=4 |" in md
    assert "(2 layers)" in md and "(4 layers)" in md
    # the locus by relative depth: the 2-layer study's 4 used pairs restore measurably at layer
    # 1; the 4-layer study's 3 do at no layer (a random model), and the table says so
    assert "| 2A restore confidence | 1.00-1.00 (layers 1-1 of 2) | none (no layer's" in md
    assert "Disconfirmation scorecard" in md and "2A restore confidence" in md
    assert (root / "multirun_layers.png").stat().st_size > 10_000
    assert "data:image/png;base64," in (root / "multirun_report.html").read_text()
    # Rerunning the same command resumes; a different sweep under the same id is refused.
    again = run_cli("-m", *SMALL, "model.tiny.n_layers=2,4", "run_id=mr", tiny=False)
    assert again.returncode == 0 and "0 shard(s) run" in again.stderr
    other = run_cli("-m", *SMALL, "model.tiny.n_layers=2,3", "run_id=mr", tiny=False)
    assert other.returncode == 2 and "holds other studies" in other.stderr


def test_a_bad_study_stops_the_multirun_before_anything_runs(run_cli, tmp_path):
    out = run_cli("-m", *SMALL, "sweep.pairs=4,999", "run_id=bad", tiny=False)
    assert out.returncode == 2
    assert "study 1-sweep.pairs-999" in out.stderr and "sweep.pairs=999" in out.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_plan_multirun_sums_time_and_cost(run_cli):
    out = run_cli("-m", "mode=plan", "model=llama2_7b_chat,llama2_13b_chat", "cluster=lambda",
                  "cluster.gpu=h100", tiny=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    costs = [float(line.split("$")[1].split()[0].replace(",", ""))
             for line in out.stdout.splitlines() if line.startswith("cost: $")]  # fmt: skip
    assert len(costs) == 2
    total = out.stdout.split("## all 2 studies:")[1]
    assert f"cost ${sum(costs):,.4f}"[:-2] in total


def test_result_identity_sees_through_prompt_file_names_but_not_settings():
    from hallu.report.multirun import result_identity

    ident = {"prompts": "p", "token_ids": "t", "metric_token_ids": "m", "weights": "w"}
    base = {"sweep": {"name": "full", "pairs": 8, "experiments": ["patching"]}, "seed": 0}

    def meta(prompts: dict, run_id: str, **over) -> dict:
        cfg = {**base, "prompts": prompts, "run_id": run_id, "storage": {"root": run_id}, **over}
        return {"config": cfg, "identity": ident}

    builtin = {"path": "builtin", "format": "auto", "conditions": {"certain": "certain"}}
    ladder = {"path": "marker_ladder", "format": "csv", "conditions": {"certain": "definitely"}}
    assert result_identity(meta(builtin, "a")) == result_identity(meta(ladder, "b"))
    other = meta(builtin, "c", sweep={**base["sweep"], "pairs": 4})
    assert result_identity(other) != result_identity(meta(builtin, "a"))
    tokens = {**meta(ladder, "d"), "identity": {**ident, "token_ids": "other"}}
    assert result_identity(tokens) != result_identity(meta(builtin, "a"))

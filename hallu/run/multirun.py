"""`python -m hallu.launch -m model=tiny,toy prompts=builtin,file ...`: one study per combination.

Sweeps use Hydra's override grammar (`key=a,b`, `key=range(1,4)`) and Hydra's basic sweeper's
expansion (the cartesian product, in the order given). Every study is composed, validated and
planned before the first one runs, so a bad combination stops the multirun with nothing written.
Then the studies run one after another, each an ordinary run in its own directory:

    <storage.root>/<multirun id>/multirun.json      the index: overrides, run id, status per study
    <storage.root>/<multirun id>/<i>-<label>/       study i's run (run.json, shards, summary...)

With `storage=s3` the same layout lives under `s3://<bucket>/<prefix>/<multirun id>/`. With
`cluster=lambda|runpod` the whole multirun is submitted as one Ray job (hallu/run/jobs.py): the
job runs this same command on the cluster (`cluster.kind=ray`), so every study uses the
cluster's workers and the studies' results and index land in the bucket.

The multirun id is `run_id=NAME` if given (rerunning it resumes every study), else
`multirun-<UTC time>`. `python -m hallu.report <multirun dir>` compares the studies
(hallu/report/multirun.py). With `mode=plan` nothing runs and the plans' time and cost are summed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hallu.config import Config, compose
from hallu.errors import Interrupted, UserError
from hallu.run.offline_plan import hours_text

if TYPE_CHECKING:
    from hallu.store.base import Store

INDEX = "multirun.json"


def expand(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """(override list per study, the keys that vary), via Hydra's own sweep expansion."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        studies = BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as err:
        raise UserError(f"-m: cannot expand the sweep: {err}") from None
    varying = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    if not varying:
        raise UserError(
            "-m/--multirun needs at least one swept key, e.g. model=tiny,toy or "
            "prompts=builtin,file; without one, drop -m"
        )
    return studies, varying


def label(i: int, study: list[str], varying: list[str]) -> str:
    """A run id for study i from the values of the swept keys: '0-model-tiny.prompts-file'."""
    parts = [o for o in study if o.split("=", 1)[0] in varying]
    text = ".".join(o.lstrip("+~").replace("=", "-") for o in parts)
    return f"{i}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:100]


def _multirun_id(overrides: list[str]) -> tuple[str | None, list[str]]:
    given = [o for o in overrides if o.startswith("run_id=")]
    rest = [o for o in overrides if not o.startswith("run_id=")]
    return (given[-1].split("=", 1)[1] if given else None), rest


def _configs(
    studies: list[list[str]], varying: list[str], config_dir: str | None
) -> list[tuple[str, list[str], Config]]:
    out = []
    for i, study in enumerate(studies):
        name = label(i, study, varying)
        try:
            cfg = compose(study, config_dir)
        except UserError as err:
            raise UserError(f"study {name} ({' '.join(study)}): {err}") from None
        out.append((name, study, cfg))
    first = out[0][2]
    for name, _, cfg in out[1:]:  # one index, one place: the studies share where they run
        for key in ("cluster.kind", "storage.kind", "storage.root", "storage.bucket"):
            a, b = (_get(c, key) for c in (first, cfg))
            if a != b:
                raise UserError(
                    f"study {name}: {key}={b!r} differs from the first study's {a!r}; -m keeps "
                    f"one multirun in one place, so sweep {key} in separate commands"
                )
    return out


def _get(cfg: Config, key: str) -> Any:
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


def _estimates(configs: list[tuple[str, list[str], Config]]) -> list[dict[str, Any]]:
    """Plan every study (validating its prompts, metric and positions); print each estimate."""
    from hallu.run.offline_plan import format_estimate, plan_and_estimate

    out = []
    for name, study, cfg in configs:
        try:
            _, est = plan_and_estimate(cfg)
        except UserError as err:
            raise UserError(f"study {name} ({' '.join(study)}): {err}") from None
        print(f"## study {name}: {' '.join(study)}")
        print("\n".join(format_estimate(cfg, est)))
        out.append(est)
    return out


def _print_totals(estimates: list[dict[str, Any]]) -> None:
    print("\n".join(totals(estimates)))


def totals(estimates: list[dict[str, Any]]) -> list[str]:
    """The multirun's sums: FLOP per stage over every study, then cells, time and cost."""
    by: dict[str, float] = {}
    for e in estimates:  # every stage of every study (hallu/run/stage_cost.py)
        for s in e.get("stages", []):
            by[s.name] = by.get(s.name, 0.0) + s.flops
    stages = ", ".join(f"{name} {f:.2e}" for name, f in by.items())
    cells = sum(e.get("cells", 0) for e in estimates)
    flops = sum(e.get("flops_engine", 0.0) for e in estimates)
    total = sum(e.get("flops_total", 0.0) for e in estimates)
    out = [f"## all {len(estimates)} studies, FLOP per stage: {stages}"]
    line = (f"## all {len(estimates)} studies: {cells:,} cells, {flops:.2e} engine FLOP, "
            f"{total:.2e} FLOP in all stages")  # fmt: skip
    priced = [e for e in estimates if "cost" in e]
    if priced:
        hours = sum(e["hours"] for e in priced)
        cost = sum(e["cost"] for e in priced)
        line += f"; time {hours_text(hours)} one after another; cost ${cost:,.4f}"
        if len(priced) < len(estimates):
            line += f" ({len(estimates) - len(priced)} studies without cluster.gpu not priced)"
    cpu = [e["seconds"] for e in estimates if "cpu_hours" in e]
    if cpu:
        line += f"; on this CPU {hours_text(sum(cpu) / 3600)} for {len(cpu)} studies"
    return [*out, line]


def _index(store: Store, studies: list[dict[str, Any]], argv: list[str]) -> None:
    doc = {"version": 1, "argv": argv, "studies": studies}
    store.write_file(INDEX, json.dumps(doc, indent=1).encode())


def _open_index(cfg: Config, mr_id: str, names: list[str], studies: list[list[str]]) -> Store:
    """The multirun's folder (local or in the bucket) as a store, holding multirun.json."""
    from hallu.store.factory import store_for

    store = store_for(cfg.storage, mr_id)  # a bucket is checked reachable first
    raw = store.read_file(INDEX)
    if raw is not None:  # resuming: the same studies, or refuse (nothing is overwritten)
        old = json.loads(raw)["studies"]
        if [(s["run_id"], s["overrides"]) for s in old] != list(zip(names, studies, strict=True)):
            raise UserError(
                f"run_id={mr_id}: {store.dir}/{INDEX} holds other studies; choose another "
                "run_id, or repeat the command that made it to resume it"
            )
    return store


def _placed(cfg: Config, mr_id: str) -> str:
    """The override that puts a study's run inside the multirun's folder."""
    if cfg.storage.kind == "s3":
        return f"storage.prefix={cfg.storage.prefix.strip('/')}/{mr_id}"
    return f"storage.root={Path(cfg.storage.root) / mr_id}"


def run(overrides: list[str], config_dir: str | None, run_one: Callable[[list[str]], int]) -> int:
    """Validate and plan every study, then run each through `run_one` (the launcher's _run)."""
    mr_id, overrides = _multirun_id(overrides)
    studies, varying = expand(overrides)
    configs = _configs(studies, varying, config_dir)
    estimates = _estimates(configs)
    _print_totals(estimates)
    first = configs[0][2]
    if first.mode == "plan":
        return 0
    mr_id = mr_id or time.strftime("multirun-%Y%m%d-%H%M%S", time.gmtime())
    if first.cluster.kind in ("lambda", "runpod"):  # the whole multirun as one Ray job
        from hallu.run.jobs import refuse_config_dir, submit_and_follow

        refuse_config_dir(first, config_dir)
        return submit_and_follow(first, ["-m", *overrides], run_id=mr_id)
    names = [n for n, _, _ in configs]
    store = _open_index(first, mr_id, names, studies)
    index = [{"run_id": n, "overrides": s, "dir": n, "status": "pending"} for n, s, _ in configs]
    _index(store, index, sys.argv[1:])
    worst = 0
    for entry in index:
        print(f"hallu: multirun {mr_id}: study {entry['run_id']}", file=sys.stderr)
        try:
            code = run_one(
                [*entry["overrides"], _placed(first, mr_id), f"run_id={entry['run_id']}"]
            )
            entry["status"] = "done" if code == 0 else f"exit {code}"
        except UserError as err:  # one study's failure leaves the others' results standing
            print(f"hallu: error: study {entry['run_id']}: {err}", file=sys.stderr)
            entry["status"], code = f"error: {err}", 2
        except Interrupted as stop:  # the multirun resumes as a whole, by its own id
            entry["status"] = f"stopped (exit {stop.code})"
            _index(store, index, sys.argv[1:])
            raise Interrupted(stop.terminated, mr_id) from None
        worst = max(worst, code)
        _index(store, index, sys.argv[1:])
    print(f"multirun: {store.dir} ({INDEX}); report: python -m hallu.report {store.dir}")
    return worst

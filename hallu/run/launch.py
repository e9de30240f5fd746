"""`python -m hallu.launch [group=option ...] [key=value ...] [+sweep=NAME]`: the one entry point.

compose + validate the config -> tokenize prompts and plan (no weights) -> [mode=plan stops here]
-> load the model -> run.json -> run unfinished shards -> aggregate into figures and a summary.

Any mistake in what the user asked for ends with one message naming the key or file and the fix,
exit code 2, and no result files. Hydra's compose API is used instead of `@hydra.main` so that
hallu owns the exit codes and the working directory (no outputs/DATE folders, no chdir).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from hallu.errors import EXIT_USER_ERROR, UserError

if TYPE_CHECKING:
    from hallu.behavior.schema import Chunk
    from hallu.config import Config
    from hallu.run.plan import Plan
    from hallu.run.prepare import Prepared
    from hallu.store.base import Store

USAGE = """usage: python -m hallu.launch [OVERRIDE ...]

Overrides use Hydra syntax:
  model=tiny|llama2_7b_chat|llama2_13b_chat|llama2_70b_chat   model.name_or_path=<hub id or dir>
  prompts=builtin|file  prompts.path=my.csv  prompts.chat_template=false
  +sweep=full|debug|behavior  sweep.layers=[0,5,-1]  sweep.positions=all|last:K|[...]  sweep.pairs=N
  mode=plan (print config and work plan, load no model)  run_id=NAME (resume or name a run)
  storage.root=DIR   storage=s3 storage.bucket=B [storage.endpoint_url=URL]
  cluster=local|ray_local|ray|lambda|runpod  cluster.num_workers=N
See README.md for every group and key.
"""


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        return _run(argv)
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


def _run(argv: list[str]) -> int:
    from hallu.config import compose

    cfg = compose(argv)
    if cfg.cluster.kind in ("lambda", "runpod"):  # submit as a Ray Job; the job runs the rest
        from hallu.run.jobs import submit_and_follow

        return submit_and_follow(cfg, argv)
    import torch

    from hallu.run.prepare import prepare

    torch.manual_seed(cfg.seed)
    prep = prepare(cfg)
    experiments = cfg.sweep.experiments
    # Each experiment is planned (and its inputs validated) only when it is asked for.
    plan = prep.plan() if "patching" in experiments else None
    chunks = _behavior_chunks(cfg, prep) if "behavior" in experiments else None
    if cfg.mode == "plan":
        if plan is not None:
            _print_plan(cfg, plan)
        if chunks is not None:
            _print_behavior_plan(cfg, chunks, config_printed=plan is not None)
        return 0

    from hallu.run.identity import study_identity
    from hallu.run.resume import open_for_writing, repair
    from hallu.store.study import new_run_id

    run_id = cfg.run_id or new_run_id(cfg)
    identity = study_identity(cfg, prep.token_ids, prep.metric, prep.logprob_diff)
    store, resumed = open_for_writing(cfg, run_id, identity)  # holds the run's lease
    try:
        print(
            f"hallu: run {run_id} -> {store.dir}{' (resuming)' if resumed else ''}", file=sys.stderr
        )
        run_meta: dict = {"plan": plan.to_json() if plan is not None else [], "identity": identity}
        if chunks is not None:
            run_meta["behavior_chunks"] = [c.chunk_id for c in chunks]
        if plan is not None:
            if resumed:
                repair(store, plan)  # shards that fail their checks are computed again
            _run_patching(cfg, plan, store, run_meta)
        if chunks is not None:
            _run_behavior(prep, chunks, store, run_meta, with_patching=plan is not None)
    finally:
        store.lease.release()
    print(f"report: python -m hallu.report {store.dir}")
    return 0


def _run_patching(cfg: Config, plan: Plan, store: Store, run_meta: dict) -> None:
    from hallu.report.summary import aggregate
    from hallu.run.local import run_local
    from hallu.run.resume import verify_finished

    started = time.perf_counter()
    print(f"hallu: {plan.describe()}", file=sys.stderr)
    if cfg.cluster.kind == "local":
        ran = run_local(cfg, plan, store, run_meta=run_meta)
    else:
        from hallu.run.ray import run_ray

        ran = run_ray(cfg, plan, store, run_meta=run_meta)
    verify_finished(store, cfg, plan)  # each planned shard once and whole, each cell once
    summary = aggregate(store, plan.n_layers)
    if cfg.sweep.noise_floor:
        from hallu.run.noise import measure_into

        measure_into(cfg, store)
    elapsed = time.perf_counter() - started
    print(
        f"hallu: {ran} shard(s) run, {len(plan.shards) - ran} already done; {elapsed:.1f} s",
        file=sys.stderr,
    )
    for direction, s in summary["directions"].items():
        h = s["headline"]
        value = f"{h['mean_of_ratios']:.3f}" if h else "n/a (last position not swept)"
        print(
            f"{direction}: band-mean restoration {value} over {s['n_pairs']} pairs; "
            f"baseline gap {s['gap_mean']:.3f}"
        )
    print(f"results: {store.dir} (summary.md, heatmap_*.png, layers.png, shards/*.parquet)")


def _behavior_chunks(cfg: Config, prep: Prepared) -> list[Chunk]:
    from hallu.behavior.schema import plan_chunks

    return plan_chunks(cfg, {pid: set(c) for pid, c in prep.token_ids.items()})


def _run_behavior(
    prep: Prepared, chunks: list[Chunk], store: Store, run_meta: dict, with_patching: bool
) -> None:
    from hallu.behavior.schema import describe
    from hallu.report.behavior import report
    from hallu.run.local import run_behavior
    from hallu.store.verify import read_verified

    started = time.perf_counter()
    print(f"hallu: {describe(prep.cfg, chunks)}", file=sys.stderr)
    ran = run_behavior(prep, chunks, store, run_meta)
    summary = report(store, read_verified(store) if with_patching else None)
    elapsed = time.perf_counter() - started
    print(
        f"hallu: {ran} behaviour chunk(s) run, {len(chunks) - ran} already done; {elapsed:.1f} s",
        file=sys.stderr,
    )
    for dec, d in summary["decodings"].items():
        rates = ", ".join(
            f"{c} {r['declarative']['k']}/{r['declarative']['n']}" for c, r in d["rates"].items()
        )
        line = f"behavior ({dec}): declarative answers {rates}"
        if "certain_vs_uncertain" in d:
            line += f"; certain vs uncertain Fisher p {d['certain_vs_uncertain']['fisher_p']:.3g}"
        print(line)
    print(f"results: {store.dir}/behavior (summary.md, figure1.png, responses/*.parquet)")


def _print_plan(cfg: Config, plan: Plan) -> None:
    from omegaconf import OmegaConf

    print("# resolved config")
    print(OmegaConf.to_yaml(cfg.model_dump()))
    print("# work plan")
    print(plan.describe())
    for s in plan.shards[:10]:
        print(
            json.dumps(
                {
                    "shard": s.shard_id,
                    "direction": s.direction,
                    "pairs": s.pair_ids,
                    "cells": s.n_cells,
                    "flops_naive": f"{s.flops_naive:.2e}",
                }
            )
        )
    if len(plan.shards) > 10:
        print(f"... and {len(plan.shards) - 10} more shards")


def _print_behavior_plan(cfg: Config, chunks: list[Chunk], config_printed: bool) -> None:
    from omegaconf import OmegaConf

    from hallu.behavior.schema import describe

    if not config_printed:
        print("# resolved config")
        print(OmegaConf.to_yaml(cfg.model_dump()))
    print("# behaviour plan")
    print(describe(cfg, chunks))


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()

"""`python -m hallu.launch [--config-dir DIR] [-m] [group=option ...] [key=value ...]`: the entry.

compose + validate the config -> [mode=plan: plan and price it offline (hallu/run/offline_plan.py),
stop] -> tokenize prompts and plan (no weights) -> load the model (cluster=local: here; on Ray:
in each worker, never here) -> run.json -> run unfinished shards, behaviour chunks and the noise
floor -> aggregate into figures and a summary. `-m` runs one study per combination of swept
values (hallu/run/multirun.py); flags, --help and "did you mean" live in hallu/cli.py.

Any mistake in what the user asked for ends with one message naming the key or file and the fix,
exit code 2, and no result files. Hydra's compose API is used instead of `@hydra.main` so that
hallu owns the exit codes and the working directory (no outputs/DATE folders, no chdir).
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from hallu.errors import EXIT_USER_ERROR, Interrupted, Terminated, UserError

if TYPE_CHECKING:
    from io import StringIO

    from hallu.behavior.schema import Chunk
    from hallu.config import Config
    from hallu.run.local import LocalPool
    from hallu.run.plan import Plan
    from hallu.run.prepare import Prepared
    from hallu.run.ray import Pool, RayStats
    from hallu.store.base import Store


def main(argv: list[str]) -> int:
    from hallu.cli import parse

    previous = _stop_on_sigterm()
    try:
        args = parse(argv)
        if args.help:
            from hallu.cli import help_text

            print(help_text(args.config_dir))
            return 0
        if args.cfg_job:  # Hydra's --cfg job: the resolved config, nothing else
            if args.multirun:
                raise UserError("--cfg job prints one config; drop -m (or give single values)")
            from hallu.config import compose

            _print_config(compose(args.overrides, args.config_dir))
            return 0
        if args.multirun:
            from hallu.run.multirun import run

            return run(args.overrides, args.config_dir, lambda o: _run(o, args.config_dir))
        return _run(args.overrides, args.config_dir)
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:  # before any run was named
        return _stopped(Interrupted(isinstance(stop, Terminated), None))
    except Interrupted as stop:
        return _stopped(stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """SIGTERM raises Terminated in the main thread, so a run stops as on Ctrl-C (its lease
    released, its console saved); the handler it replaces, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _stopped(stop: Interrupted) -> int:
    print(f"hallu: {stop}", file=sys.stderr)
    return stop.code


def _run(argv: list[str], config_dir: str | None = None) -> int:

    from hallu.config import compose

    cfg = compose(argv, config_dir)
    if cfg.mode == "plan":  # for any cluster: nothing is submitted, loaded or downloaded
        return _plan(cfg)
    if cfg.cluster.kind in ("lambda", "runpod"):  # submit as a Ray Job; the job runs the rest
        from hallu.run.jobs import refuse_config_dir, submit_and_follow

        refuse_config_dir(cfg, config_dir)
        return submit_and_follow(cfg, argv)
    return _run_study(cfg, argv)


def _run_study(cfg: Config, argv: list[str] | None = None) -> int:
    """The study, its console output also saved as the run's console.log (hallu/run/console.py).
    Ctrl-C, SIGTERM and a full disk end it with one line saying how to resume. `argv`: the
    overrides it was launched with, for the resume command a budget stop prints."""
    from hallu.run.console import tee
    from hallu.store.study import new_run_id

    cfg = cfg.model_copy(update={"run_id": cfg.run_id or new_run_id(cfg)})
    with tee() as log:
        try:
            return _study(cfg, log, argv or [])
        except KeyboardInterrupt as stop:
            raise Interrupted(isinstance(stop, Terminated), cfg.run_id) from None
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            where = err.filename or "a file (results go to storage.root, figures via TMPDIR)"
            raise UserError(
                f"cannot write {where} ({err.strerror}); the results stored so far are kept. "
                f"Fix: free space there and rerun with run_id={cfg.run_id} to resume"
            ) from None


def _study(cfg: Config, log: StringIO, argv: list[str]) -> int:
    """Validate and plan every asked experiment (no weights), then run them under one lease."""
    from hallu.cli import quiet_libraries

    quiet_libraries(cfg.verbose)
    import torch

    from hallu.run.executor import open_pool
    from hallu.run.identity import study_identity
    from hallu.run.prepare import prepare
    from hallu.run.progress import Progress, check_budget
    from hallu.run.resume import open_for_writing
    from hallu.store.study import new_run_id

    check_budget(cfg)
    torch.manual_seed(cfg.seed)
    prep = prepare(cfg)
    experiments = cfg.sweep.experiments
    # Each experiment is planned (and its inputs validated) only when it is asked for.
    plan = prep.plan() if "patching" in experiments else None
    chunks = _behavior_chunks(cfg, prep) if "behavior" in experiments else None
    mechanism = None
    if "mechanism" in experiments:
        from hallu.mechanism.units import check

        mechanism = check(prep)
    run_id = cfg.run_id or new_run_id(cfg)  # set by _run_study
    identity = study_identity(cfg, prep.token_ids, prep.metric, prep.logprob_diff)
    store, resumed = open_for_writing(cfg, run_id, identity)  # holds the run's lease
    # One set of runners for every stage: one model load per runner (hallu/run/executor.py).
    pool = open_pool(cfg, store)
    # status.json for `hallu status`, the budget, and the measured rates for mode=plan.
    progress = pool.progress = Progress(cfg, store, argv, _planned(prep, plan))
    state = "failed"
    try:
        print(f"hallu: run {run_id} -> {store.dir}{' (resuming)' * resumed}", file=sys.stderr)
        print(f"hallu: progress, ETA and cost: hallu status {store.dir} --watch", file=sys.stderr)
        run_meta: dict = {"plan": plan.to_json() if plan is not None else [], "identity": identity}
        run_meta["n_layers"] = prep.shape.n_layers  # the report reads it without the model
        if chunks is not None:
            run_meta["behavior_chunks"] = [c.chunk_id for c in chunks]
        _run_stages(prep, plan, chunks, mechanism, store, resumed, run_meta, pool)
        state = "finished"
    except BaseException as err:
        progress.last_error = progress.last_error or f"{type(err).__name__}: {err}"[:400]
        raise
    finally:
        pool.close()
        progress.close(state)
        from hallu.run.console import save

        save(store, log)  # before the lease goes: no other driver writes the run meanwhile
        store.lease.release()
    print(f"report: python -m hallu.report {store.dir}")
    return 0


def _run_stages(
    prep: Prepared,
    plan: Plan | None,
    chunks: list | None,
    mechanism: object,
    store: Store,
    resumed: bool,
    run_meta: dict,
    pool: LocalPool | Pool,
) -> None:
    """Every asked stage through the pool: patching and controls, behaviour, then mechanism."""
    if plan is not None and resumed:
        from hallu.run.resume import repair

        repair(store, plan)  # shards that fail their checks are computed again
    if plan is not None or chunks is not None:
        started = time.perf_counter()
        ran = _run_experiments(prep, plan, chunks, store, run_meta, pool)
        elapsed = time.perf_counter() - started
        if plan is not None:
            _patching_summary(prep.cfg, plan, store, ran["patching"] + ran["controls"], elapsed)
        if chunks is not None:
            _behavior_summary(prep, chunks, store, ran["behavior"], plan is not None)
    if mechanism is not None:
        print(f"hallu: {mechanism}", file=sys.stderr)
        _run_mechanism(prep, store, run_meta, pool)


def _planned(prep: Prepared, plan: Plan | None) -> dict[str, float] | None:
    """The plan's time and cost (mode=plan's numbers) for status.json; None without them."""
    from hallu.run.estimate import estimate

    lengths = {p: {c: len(i) for c, i in d.items()} for p, d in prep.token_ids.items()}
    try:
        est = estimate(prep.cfg, prep.shape, lengths, plan, prep.token_ids)
    except UserError:  # e.g. cluster.gpu too small for the model: the run decides, not this
        return None
    if "seconds" not in est:
        return None
    gpus = est["hours"] * est["replicas"] * est["gpus_per_replica"] if "gpu" in est else None
    return {"seconds": est["seconds"], "cost_usd": est.get("cost"), "gpu_hours": gpus}


def _run_experiments(
    prep: Prepared,
    plan: Plan | None,
    chunks: list[Chunk] | None,
    store: Store,
    run_meta: dict,
    pool: LocalPool | Pool,
) -> Counter[str]:
    """Run patching (with controls and the noise floor) and behaviour; units run per stage.

    One call of the executor for every stage's units: cluster=local runs them in this process
    in the order listed (patching, noise floor, behaviour); Ray spreads them over the pool's
    workers (this process then loads no weights)."""
    from hallu.behavior.schema import describe
    from hallu.run.executor import run_units
    from hallu.run.noise import FILE, announce
    from hallu.run.units import NoiseFloor, WorkUnit

    cfg = prep.cfg
    if plan is not None:
        print(f"hallu: {plan.describe()}", file=sys.stderr)
    if chunks is not None:
        print(f"hallu: {describe(cfg, chunks)}", file=sys.stderr)
    units: list[WorkUnit] = [*(plan.shards if plan else [])]
    if plan is not None and cfg.sweep.noise_floor:  # the summary's pair checks read the floor
        units.append(NoiseFloor())
    units += chunks or []
    stats = _ray_stats(cfg)
    ran = run_units(cfg, units, store, run_meta, pool, stats)
    if stats is not None and stats.by_stage:
        print(f"hallu: on {stats.workers} worker(s): {stats.where()}", file=sys.stderr)
    if ran["noise floor"]:
        announce(json.loads(store.read_file(FILE) or b"{}"))
    return ran


def _ray_stats(cfg: Config) -> RayStats | None:
    """What the Ray driver saw, for the log line naming the workers; None for cluster=local."""
    if cfg.cluster.kind == "local":
        return None
    from hallu.run.ray import RayStats

    return RayStats()


def _patching_summary(cfg: Config, plan: Plan, store: Store, ran: int, elapsed: float) -> None:
    from hallu.report.summary import aggregate
    from hallu.run.resume import verify_finished

    verify_finished(store, cfg, plan)  # each planned shard once and whole, each cell once
    summary = aggregate(store, plan.n_layers, cfg.analysis.model_dump())
    print(
        f"hallu: {ran} shard(s) run, {len(plan.shards) - ran} already done; {elapsed:.1f} s",
        file=sys.stderr,
    )
    for line in summary["headline_lines"]:  # hallu/analysis/results.py, as every output
        print(line)
    print(f"results: {store.dir} (summary.md, heatmap_*.png, layers.png, shards/*.parquet)")


def _run_mechanism(prep: Prepared, store: Store, run_meta: dict, pool: LocalPool | Pool) -> None:
    from hallu.mechanism.stages import run_mechanism
    from hallu.run.executor import run_units

    cfg, started, stats = prep.cfg, time.perf_counter(), _ray_stats(prep.cfg)
    run_mechanism(prep, store, lambda units: run_units(cfg, units, store, run_meta, pool, stats))
    if stats is not None and stats.by_stage:
        print(f"hallu: mechanism on {stats.workers} worker(s): {stats.where()}", file=sys.stderr)
    numbers = _mechanism_summary(prep, store)
    print(f"hallu: mechanism done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for r in numbers.get("directions", []):
        if r["site"] == cfg.sweep.mechanism.steer_site:
            est, lo, hi = r["cosine"]
            print(f"mechanism: layer {r['layer']} {r['site']}: cosine(certain, uncertain) "
                  f"{est:.3f} [{lo:.3f}, {hi:.3f}]")  # fmt: skip
    for c in numbers.get("steering", []):
        if c["alpha"] in (min(cfg.sweep.mechanism.alphas), max(cfg.sweep.mechanism.alphas)):
            print(f"mechanism: steer L{c['layer']} {c['direction']} alpha {c['alpha']:+.2f}: "
                  f"declarative {c['declarative'][0]:.3f}")  # fmt: skip
    print(f"results: {store.dir}/mechanism (summary.md, capture/ steer/ patchgen/ *.parquet)")


def _mechanism_summary(prep: Prepared, store: Store) -> dict:
    """mechanism/summary.md from the stored units (the report's section); its numbers."""
    from hallu.mechanism.schema import FOLDER, read_store
    from hallu.report.doc import Doc
    from hallu.report.mechanism import section

    doc = Doc(f"mechanism: run {store.run_id}")
    numbers = section(doc, read_store(store), prep.cfg.sweep.mechanism.top_heads)
    store.write_file(f"{FOLDER}/summary.md", doc.markdown().encode())
    return numbers


def _behavior_chunks(cfg: Config, prep: Prepared) -> list[Chunk]:
    from hallu.behavior.schema import plan_chunks

    return plan_chunks(cfg, {pid: set(c) for pid, c in prep.token_ids.items()})


def _behavior_summary(
    prep: Prepared, chunks: list[Chunk], store: Store, ran: int, with_patching: bool
) -> None:
    from hallu.report.behavior import report
    from hallu.store.verify import read_narrow

    summary = report(store, read_narrow(store)[0] if with_patching else None)
    print(
        f"hallu: {ran} behaviour chunk(s) run, {len(chunks) - ran} already done",
        file=sys.stderr,
    )
    if "headline_line" in summary:  # hallu/analysis/behavior_rates.py, as every output
        print(summary["headline_line"])
    print(f"results: {store.dir}/behavior (summary.md, figure1.png, responses/*.parquet)")


def _plan(cfg: Config) -> int:
    """mode=plan: the resolved config, the work plan and its estimate; loads no weights."""
    from hallu.run.offline_plan import format_estimate, plan_and_estimate

    plan, est = plan_and_estimate(cfg)
    _print_config(cfg)
    if plan is not None:
        _print_plan(plan)
    print("\n".join(format_estimate(cfg, est)))
    return 0


def _print_config(cfg: Config) -> None:
    from omegaconf import OmegaConf

    print("# resolved config")
    print(OmegaConf.to_yaml(cfg.model_dump()))


def _print_plan(plan: Plan) -> None:
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


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()

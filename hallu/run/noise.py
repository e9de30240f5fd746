"""The metric's noise floor: how far it moves when nothing that should matter changes.

On the run's model, for up to `max_pairs` pairs (their certain and uncertain prompts), the metric
at the last position is computed four ways in each dtype (the run's, float32, bfloat16, float16):

- *alone*: one prompt, batch of 1, no padding (how the patching engine computes baselines);
- *batch*: the prompt in a batch with other prompts of its length (or with copies of itself):
  other batch shapes pick other kernels and summation orders;
- *padding*: every prompt in one left-padded batch (attention mask and position ids set right);
- *precision*: the dtype's *alone* value against float32's.

`metric_floor` is the largest change seen in the run's own dtype (batch, padding, and its
distance from float32). A baseline gap (clean - corrupted) is a difference of two metrics, so any
gap with |gap| <= `gap_floor` = 2 x metric_floor is inside the floor: a restoration ratio with
such a denominator is rounding, not a finding. The source study's 1.000 vs 0.909 was one such
case.

The other dtypes are made from the run's replica in memory, never read from disk again: a dtype
that holds every value of the run's exactly (float32 for a float16 or bfloat16 run) by casting
the replica's parameters in place, one at a time, and back afterwards (the peak is about the
wider copy alone, so a 13b's 52 GB of float32 fits an 80 GB card that could not hold it beside
its 26 GB float16 replica); another (float16 <-> bfloat16, or either from a float32 run) as a
copy with its parameters cast, freed after measuring. A dtype that does not fit is recorded as
that dtype's error. Only parameters change dtype: buffers (rotary frequencies) stay as loaded,
as transformers' from_pretrained keeps them float32 in every dtype. So each dtype's numbers are
the run's weights computed in that dtype (arithmetic precision). That equals loading the
checkpoint in that dtype whenever the run's dtype holds the checkpoint's values exactly: a
float16 checkpoint such as Llama-2-13b-chat's run in float16, any checkpoint run in float32.
When it does not (a float32 checkpoint run in bfloat16), float32's numbers are the rounded
weights in float32: the floor then measures the arithmetic, not the rounding of the weights,
which is the replica the run patches. Afterwards the replica must be bit for bit what it was
(the worker goes on patching with it): a checksum of its parameters' bits before and after says
so, else `ReplicaChanged`.

`sweep.noise_floor=true` in the run (measured on the run's own replica), or
`python -m hallu.run.noise RUN` afterwards (a run directory or s3:// prefix; loads the model
once, in the run's dtype), writes `noise_floor.json` into the run. The report only reads it
(hallu/report/sections.py says this command when it is missing).
"""

from __future__ import annotations

import copy
import gc
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from hallu.behavior.generate import left_pad
from hallu.config import Config, validate
from hallu.errors import UserError

MEASURED_DTYPES = ("float32", "bfloat16", "float16")
FILE = "noise_floor.json"


@torch.no_grad()
def _last_metric(model: Any, metric: Any, batch: list[list[int]], pad_id: int) -> np.ndarray:
    """Metric at each prompt's last token for one (left-padded if needed) batch."""
    device = next(model.parameters()).device
    ids, mask = left_pad(batch, pad_id)
    # Positions count real tokens only, so padding shifts no position (left padding).
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        use_cache=False,
    )
    return metric(out.logits[:, -1, :]).cpu().numpy().astype(np.float64)


def _measure_dtype(model: Any, metric: Any, prompts: list[list[int]], pad_id: int) -> dict:
    alone = np.array([_last_metric(model, metric, [p], pad_id)[0] for p in prompts])
    batched = np.empty(len(prompts))
    for i, p in enumerate(prompts):
        same = [q for j, q in enumerate(prompts) if j != i and len(q) == len(p)][:7]
        batched[i] = _last_metric(model, metric, [p, *(same or [p] * 7)], pad_id)[0]
    padded = _last_metric(model, metric, prompts, pad_id)
    return {"alone": alone, "batch": np.abs(batched - alone), "padding": np.abs(padded - alone)}


def _stats(delta: np.ndarray) -> dict[str, float]:
    return {"max": float(delta.max()), "p95": float(np.percentile(delta, 95))}


def measure(
    cfg: Config, max_pairs: int = 16, prep: Any = None, loaded: Any = None
) -> dict[str, Any]:
    """Measure the metric's movements in each dtype on the run's replica (module docstring).

    `prep` (hallu.run.prepare.Prepared) and `loaded` (the model in the run's dtype) are what a
    worker holds already: it measures on its own replica and loads nothing; without `loaded`
    the model is loaded once, in the run's dtype."""
    from hallu.engine.models import resolve_device, resolve_dtype
    from hallu.run.prepare import prepare

    prep = prep if prep is not None else prepare(cfg)
    prompts = [
        ids
        for conds in list(prep.token_ids.values())[:max_pairs]
        for c, ids in conds.items()
        if c in ("certain", "uncertain")
    ]
    device = resolve_device(cfg.model)
    run_dtype = str(resolve_dtype(cfg.model, device)).removeprefix("torch.")
    per, alone = _per_dtype(cfg, prep, prompts, run_dtype, loaded)
    if run_dtype not in alone:
        raise UserError(f"noise floor: the run's dtype {run_dtype} failed: {per[run_dtype]}")
    for dtype in alone:
        if "float32" in alone:
            per[dtype]["precision_vs_float32"] = _stats(np.abs(alone[dtype] - alone["float32"]))
    own = per[run_dtype]
    parts = [own["batch"]["max"], own["padding"]["max"]]
    parts.append(own.get("precision_vs_float32", {"max": 0.0})["max"])
    floor = max(parts)
    return {
        "model": cfg.model.name_or_path,
        "device": device.type,
        "run_dtype": run_dtype,
        "n_prompts": len(prompts),
        "metric_abs_mean": float(np.abs(alone[run_dtype]).mean()),
        "per_dtype": per,
        "metric_floor": floor,
        "gap_floor": 2 * floor,
        "definition": "metric_floor = max |change| of the metric in the run's dtype under "
        "batching, padding and against float32; a gap |clean - corrupted| <= gap_floor "
        "(2 x metric_floor) is inside the floor",
    }


class ReplicaChanged(Exception):
    """The replica's parameters differ after the noise floor: no unit may patch with it."""


def _per_dtype(
    cfg: Config, prep: Any, prompts: list[list[int]], run_dtype: str, loaded: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """({dtype: its stats or error}, {dtype: the metric alone}) for the run's dtype and others,
    each made from the one replica (module docstring)."""
    from hallu.engine.models import load_model

    pad_id = prep.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (prep.tokenizer.eos_token_id or 0)
    replica = loaded if loaded is not None else load_model(cfg.model, len(prep.tokenizer))[0]
    run = getattr(torch, run_dtype)
    params = [p for p in replica.parameters() if p.dtype == run]
    before = _checksum(params)

    def measure_one(model: Any) -> dict:
        return _measure_dtype(model, prep.metric, prompts, pad_id)

    per: dict[str, Any] = {}
    alone: dict[str, np.ndarray] = {}
    for dtype in dict.fromkeys((run_dtype, *MEASURED_DTYPES)):
        try:
            m = _measure_in(replica, params, run, getattr(torch, dtype), measure_one)
        except (RuntimeError, torch.OutOfMemoryError) as err:  # e.g. no fp16 kernel, no memory
            per[dtype] = {"error": str(err).splitlines()[0][:200]}
            continue
        alone[dtype] = m["alone"]
        per[dtype] = {"batch": _stats(m["batch"]), "padding": _stats(m["padding"])}
    if not torch.equal(_checksum(params), before):
        raise ReplicaChanged(
            f"noise floor: the replica of {cfg.model.name_or_path} changed while it was measured "
            "(its parameters' checksum differs); no further unit runs on it"
        )
    return per, alone


def _measure_in(
    replica: Any, params: list[Any], run: torch.dtype, dtype: torch.dtype, measure: Any
) -> dict:
    """`measure(model)` in `dtype`; a copy it makes is gone when this returns."""
    with _in_dtype(replica, params, run, dtype) as model:
        return measure(model)


@contextmanager
def _in_dtype(
    replica: Any, params: list[Any], run: torch.dtype, dtype: torch.dtype
) -> Iterator[Any]:
    """The replica in `dtype`: itself (the run's dtype `run`); itself with `params` (those in
    `run`) cast in place and cast back afterwards, also after an error, where `dtype` holds each
    of their values exactly; else a copy with them cast, freed afterwards."""
    if dtype == run:
        yield replica
        return
    if not _holds(dtype, run):
        # The cast parameters go in deepcopy's memo: no full copy in the run's dtype first.
        memo: dict[int, Any] = {
            id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
            for p in params
        }
        other = copy.deepcopy(replica, memo)
        del memo
        try:
            yield other
        finally:
            del other
            _release()
        return
    try:
        for p in params:  # one at a time: the peak is the wider copy and one parameter
            p.data = p.data.to(dtype)
        yield replica
    finally:
        for p in params:
            p.data = p.data.to(run)  # exact: `dtype` holds every value of `run`
        _release()


def _holds(wide: torch.dtype, narrow: torch.dtype) -> bool:
    """Whether every value of `narrow` is one of `wide` (float32 holds float16 and bfloat16)."""
    w, n = torch.finfo(wide), torch.finfo(narrow)
    return w.eps <= n.eps and w.max >= n.max and w.smallest_normal <= n.smallest_normal


def _checksum(params: list[Any]) -> torch.Tensor:
    """Per parameter, the sum of its elements' bits as integers: a changed bit changes it."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    # Each sum to the CPU: a replica spread over several GPUs has parameters on each.
    sums = [p.detach().view(ints[p.element_size()]).sum(dtype=torch.int64).cpu() for p in params]
    return torch.stack(sums) if sums else torch.zeros(0, dtype=torch.int64)


def _release() -> None:
    """Free what a copy or a cast left behind (a model's modules may hold reference cycles)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_run(source: str) -> str:
    """Measure the noise floor of the run at `source` (directory or s3://) and store it there;
    where it was written."""
    from hallu.store.factory import store_at

    store = store_at(source)
    meta = store.read_meta()
    if meta is None:
        raise UserError(f"{source}: no run.json; give a run written by `python -m hallu.launch`")
    result = measure(validate(meta["config"]))
    store.write_file(FILE, json.dumps(result, indent=2).encode())
    return f"{str(source).rstrip('/')}/{FILE}"


def announce(result: dict[str, Any]) -> None:
    """The one line a run prints about its noise floor."""
    print(
        f"hallu: noise floor: metric moves by up to {result['metric_floor']:.3g} "
        f"({result['run_dtype']}); gaps within {result['gap_floor']:.3g} are flagged",
        file=sys.stderr,
    )


def main(argv: list[str]) -> int:
    from hallu.errors import EXIT_USER_ERROR

    if len(argv) != 1 or argv[0].startswith("-"):
        usage = "usage: python -m hallu.run.noise RUN   (a run directory or s3:// prefix)"
        print(usage, file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        path = measure_run(argv[0])
    except UserError as err:
        print(f"hallu: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"noise floor: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

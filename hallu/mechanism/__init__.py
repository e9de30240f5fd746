"""+sweep=mechanism: from locus to mechanism (docs/mechanism.md).

`schema.py` (no torch): the stored tables, `Unit`, `read_store`; `units.py`: the prompts and
sites, validation and the units of both stages; `worker.py`: `MechanismWorker`, which computes a
unit on a loaded model; `stages.py`: capture, the directions, then steering, patch-and-generate
and per-head effects, each stage handed to the caller's executor. Never imports hallu.run,
hallu.report, hallu.store, Ray or boto3.
"""

"""What +sweep=mechanism stores and how it is read back: no torch, so the report imports it.

`SCHEMAS` holds one Arrow schema per unit kind, `Unit` names one unit of work (planned in
hallu/mechanism/units.py, run by hallu/mechanism/worker.py), stored at
`FOLDER/<kind>/<unit_id>.parquet`. `read_store` reads every kind a run holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

FOLDER = "mechanism"
_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
SCHEMAS: dict[str, pa.Schema] = {
    "capture": pa.schema(
        [("run_id", _S), ("unit_id", _S), ("prompt_id", _S), ("pair_id", _S), ("claim_id", _S),
         ("rung", _S), ("condition", _S), ("strength", _I), ("claim_true", _B), ("template", _S),
         ("layer", _I), ("site", _S), ("position", _I), ("lens", _F),
         ("vector", pa.list_(pa.float32())), ("metric_value", _F)]
    ),
    "steer": pa.schema(
        [("run_id", _S), ("unit_id", _S), ("prompt_id", _S), ("claim_id", _S),
         ("claim_true", _B), ("direction", _S), ("layer", _I), ("site", _S), ("alpha", _F),
         ("norm", _F), ("sample_index", _I), ("response", _S), ("style_label", _S),
         ("metric_value", _F), ("judge_label", _S)]
    ),
    "patchgen": pa.schema(
        [("run_id", _S), ("unit_id", _S), ("pair_id", _S), ("claim_id", _S), ("claim_true", _B),
         ("patch_direction", _S), ("setting", _S), ("layer", _I), ("site", _S),
         ("sample_index", _I), ("response", _S), ("style_label", _S), ("metric_value", _F),
         ("judge_label", _S)]
    ),
    "heads": pa.schema(
        [("run_id", _S), ("unit_id", _S), ("pair_id", _S), ("claim_id", _S), ("claim_true", _B),
         ("patch_direction", _S), ("layer", _I), ("head", _I), ("clean", _F),
         ("corrupted", _F), ("total", _F), ("path", _F), ("direct", _F)]
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Unit:
    kind: str  # capture | steer | patchgen | heads
    unit_id: str
    claims: tuple[str, ...]
    layers: tuple[int, ...]
    direction: str = ""  # steer: found | random_K; patchgen: restore_confidence | ...
    vector: tuple[float, ...] = field(default=(), repr=False)  # steer: the direction


def read_store(store: Any) -> dict[str, pd.DataFrame]:
    """kind -> rows, for the kinds a run store (local or S3, hallu/store/base.py) holds."""
    return {
        kind: store.read_tables(f"{FOLDER}/{kind}", schema).to_pandas()
        for kind, schema in SCHEMAS.items()
        if store.table_names(f"{FOLDER}/{kind}")
    }

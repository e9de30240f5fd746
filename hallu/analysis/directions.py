"""The two patching directions as the analysis names them.

`DIRECTION_NAMES` is their order in every output (hallu/config.py's `DIRECTIONS` maps each to its
(source, target) conditions; analysis imports nothing of hallu, so it keeps its own names).
"""

from __future__ import annotations

DIRECTION_NAMES = ("restore_confidence", "induce_tentativeness")
SHORT = {"restore_confidence": "2A", "induce_tentativeness": "2B"}
# The sign clean - corrupted has when the certain prompt's metric is above the uncertain one's.
EXPECTED_SIGN = {"restore_confidence": 1.0, "induce_tentativeness": -1.0}

"""The metric registry (hallu/engine/metrics.py) and the engine's face (hallu/engine/patch.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from hallu.config import MetricCfg
from hallu.engine.cost import TokenFlops, cell_flops, known_by_tokens
from hallu.engine.metrics import METRICS
from hallu.engine.patch import choose_adapter
from hallu.errors import UserError


def test_every_metric_a_config_can_name_is_in_the_registry():
    """A new metric name in the config without a registry entry (or the reverse) fails here,
    not in the middle of a sweep."""
    main = set(get_args(MetricCfg.model_fields["name"].annotation))
    (extra_item,) = get_args(MetricCfg.model_fields["extra"].annotation)
    assert main | set(get_args(extra_item)) == set(METRICS)


def test_the_hook_route_refuses_components_it_cannot_patch():
    with pytest.raises(UserError, match="needs the fast engine"):
        choose_adapter(object(), "hooks", "head")
    assert choose_adapter(object(), "hooks", "resid_pre") is None


def test_cost_of_a_cell_in_pieces_and_whole():
    """Whole layers: (L - l) layers over the suffix plus the unembedding; in pieces the first
    layer projects q/k/v at the patched position only and the last runs at the last position."""
    f = TokenFlops(per_layer=10.0, qkv=3.0, kv=2.0, unembed=100.0)
    assert cell_flops(4, 1, 5, f, in_pieces=False) == 3 * 5 * 10 + 100
    # layer 1 of 4, suffix 5: first layer 5*10 - 4*3, layer 2 whole (5*10), the last layer
    # at one position (10) plus the other suffix positions' keys/values (4*2), unembedding.
    assert cell_flops(4, 1, 5, f) == (50 - 12) + 50 + 10 + 8 + 100
    assert cell_flops(4, 3, 1, f) == 10 + 100
    # patched at the last layer: the patched token's q/k/v and the last position's rest cost
    # one position's layer, whatever the suffix (counted: tests/test_estimate.py toy_full)
    assert cell_flops(4, 3, 2, f) == 10 + 100
    assert known_by_tokens(2, 2, 3) and not known_by_tokens(3, 3, 3)
    assert not known_by_tokens(1, 2, 3)

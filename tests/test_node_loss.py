"""A whole node lost mid-run (issue 25, item 3): a preempted instance takes its raylet, object
store and every actor on it. On a real multi-node Ray cluster on this machine
(ray.cluster_utils.Cluster: one head and three worker nodes, each its own raylet), the node
running one of the two workers is removed while units are in flight; its units are re-queued,
its actor is restarted on the spare node, the run completes with every row exactly once (the
rows of the in-process run), and the log names the node that went.
"""

from __future__ import annotations

import threading
import time

import pytest

from hallu.run.prepare import prepare
from hallu.run.ray import RayStats, run_ray
from hallu.store.local import LocalStore

from .cluster_fixtures import cell_keys, descendants, local_reference, service_env, sorted_rows
from .conftest import tiny_config

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # four raylets, a node removed, a local reference

# 24 one-pair shards of a wider tiny model: the run is still going when the node goes.
LONG = ["sweep.pairs_per_shard=1", "sweep.pairs=12", "sweep.positions=last:12"]
LONG += ["model.tiny.n_layers=8", "model.tiny.d_model=256", "model.tiny.d_mlp=1024"]
RAY = ["cluster=ray", "cluster.num_workers=2", "cluster.resources.num_cpus=1"]
RAY += ["cluster.resources.num_gpus=0"]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    with service_env():
        c = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,  # the driver's node runs no worker
                # A lost node is declared dead after 2 missed checks a second apart.
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 2,
                },
            },
        )
        nodes = [c.add_node(num_cpus=1) for _ in range(3)]  # two workers and a spare
        c.wait_for_nodes()
        ray.init(address=c.address, logging_level="ERROR")
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def test_node_lost_mid_run_requeues_its_units_and_rows_stay_exactly_once(cluster, tmp_path, capsys):
    c, nodes = cluster
    cfg = tiny_config(*RAY, *LONG, root=tmp_path)
    plan = prepare(cfg).plan()
    store = LocalStore(tmp_path, "lost")  # one filesystem: every node here writes to it
    stats, box = RayStats(), {}

    def drive():
        try:
            box["ran"] = run_ray(cfg, plan, store, {"plan": plan.to_json()}, stats)
        except BaseException as err:  # reported by the assertion below
            box["error"] = err

    driver = threading.Thread(target=drive)
    driver.start()
    lost = None
    deadline = time.monotonic() + 600
    while lost is None and driver.is_alive() and time.monotonic() < deadline:
        if len(store.done_shards()) >= 2:  # mid-run: some stored, most still to go
            for node in nodes:
                running = descendants(_raylet_pid(node)).values()
                if any(cmd.startswith("ray::ShardRunner.run") for cmd in running):
                    at_loss = len(store.done_shards())
                    c.remove_node(node, allow_graceful=False)
                    lost = node
                    break
        time.sleep(0.05)
    driver.join(timeout=900)
    assert "error" not in box, box.get("error")
    assert lost is not None, "the run ended before a node could be removed"
    assert at_loss < len(plan.shards), "removed before the last unit was stored"
    err = capsys.readouterr().err
    said = [ln for ln in err.splitlines() if " lost, " in ln and lost.node_id in ln]
    assert said, err[-3000:]  # the log names the node that went
    assert stats.worker_failures >= 1 and stats.requeued >= 1
    assert box["ran"] == len(plan.shards)
    got = store.read_results()
    assert len(set(cell_keys(got))) == got.num_rows, "every cell exactly once"
    assert sorted_rows(got).equals(local_reference(cfg, tmp_path / "ref", plan))

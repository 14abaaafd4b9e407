"""The cluster's devices as the controller sees them (no Ray needed): what a trial asks for,
how many fit at once, the refusal of a trial no node can hold, and the plain error of
``--executor ray`` without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune.cluster import CPU_SLOT, ClusterDevices, NodeResources
from autotune.cluster.resources import resource_kind
from autotune.devices import NoDevicesError


def _gpu_nodes(*counts: int) -> list[NodeResources]:
    return [NodeResources(f"node{i}", f"10.0.0.{i}", {"CPU": 64, "GPU": c})
            for i, c in enumerate(counts)]


def test_gpu_trials_ask_for_their_gpus_and_one_larger_than_every_node_is_refused() -> None:
    cluster = ClusterDevices(_gpu_nodes(4, 4), "gpu", "10.0.0.1:6379")
    assert cluster.slots == 8 and cluster.capacity == 4
    assert cluster.request(2) == {"num_cpus": 0, "num_gpus": 2}
    assert cluster.misfit(4) is None
    assert cluster.misfit(8) == (
        "it needs 8 GPU(s) on one node (tensor parallel x pipeline parallel); the largest node "
        "of the Ray cluster has 4 (nodes: 4, 4)")
    assert cluster.describe() == "Ray cluster 10.0.0.1:6379: 2 node(s), 8 GPU(s) (4+4)"
    cluster.refresh(_gpu_nodes(4))  # a node died
    assert cluster.slots == 4


def test_cpu_nodes_offer_engine_slots() -> None:
    nodes = [NodeResources("head", "h", {"CPU": 8}),
             NodeResources("a", "a", {"CPU": 16, CPU_SLOT: 1}),
             NodeResources("b", "b", {"CPU": 16, CPU_SLOT: 2})]
    assert resource_kind("auto", nodes) == "cpu"
    assert resource_kind("auto", _gpu_nodes(1)) == "gpu"
    cluster = ClusterDevices(nodes, "cpu", "auto")
    assert cluster.slots == 3 and cluster.capacity == 2
    assert cluster.request(1) == {"num_cpus": 0, "resources": {CPU_SLOT: 1}}
    empty = ClusterDevices(nodes[:1], "cpu", "auto")
    assert "no live node of the Ray cluster has any" in (empty.misfit(1) or "")
    with pytest.raises(NoDevicesError, match="acquired by Ray on its nodes"):
        cluster.acquire(1)


def test_stuck_gpus_are_kept_per_node() -> None:
    cluster = ClusterDevices(_gpu_nodes(8, 8), "gpu", "x")
    cluster.note_stuck("node1", [3])
    cluster.note_stuck("node1", [3, 5])
    assert cluster.stuck_on_nodes() == {"node1": [3, 5]}
    assert cluster.stuck() == [3, 5]


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path: Path,
                                                         demo_model: Path) -> None:
    from autotune.testing.spaces import small_space, write_space

    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    # sys.modules["ray"] = None makes `import ray` fail as it does where Ray is not installed.
    code = ("import sys; sys.modules['ray'] = None; from autotune.cli import main; "
            "sys.argv = ['autotune'] + sys.argv[1:]; main()")
    run = subprocess.run(
        [sys.executable, "-c", code, "study", "start", "--space", str(space), "--storage",
         f"sqlite:///{tmp_path / 's.db'}", "--executor", "ray"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "pip install 'autotune[ray]'" in " ".join((run.stdout + run.stderr).split())

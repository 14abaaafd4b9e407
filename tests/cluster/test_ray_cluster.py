"""Trials on a real local Ray cluster (``ray.cluster_utils.Cluster``): a head without engine
slots and two nodes of one ``autotune_cpu_slot`` each, pinned to cores 0 and 1 of this host
(``AUTOTUNE_DEVICES``). Real vLLM CPU trials run on both; a node removed mid-trial costs that
attempt and nothing else; a controller killed with SIGKILL leaves no engine, and the study
resumes. One cluster for the module: starting one takes about 20 s here."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autotune.testing.processes import engine_processes
from autotune.testing.spaces import small_space, write_space

pytestmark = [
    pytest.mark.engine,
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed (pip install '.[ray]'; setup.sh --dev does)"),
]

SLOT = {"autotune_cpu_slot": 1}


class LocalCluster:
    """Two one-slot nodes on this host; ``ensure_two`` adds back a node a test removed."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True,
                               head_node_args={"num_cpus": 0, "include_dashboard": False})
        self.nodes = {}
        for core in (0, 1):
            self.add(core)

    def add(self, core: int) -> None:
        node = self.cluster.add_node(num_cpus=1, resources=SLOT,
                                     env_vars={"AUTOTUNE_DEVICES": f"cpu:{core}"})
        self.nodes[core] = node

    def ensure_two(self) -> None:
        for core in (0, 1):
            if self.nodes[core] not in self.cluster.worker_nodes:
                self.add(core)
        self.cluster.wait_for_nodes()

    def remove(self, node_id: str) -> int:
        """Kill the node ``node_id`` (its raylet and workers); its core."""
        for core, node in self.nodes.items():
            if node.node_id == node_id:
                self.cluster.remove_node(node, allow_graceful=False)
                return core
        raise AssertionError(f"no node {node_id}")

    @property
    def address(self) -> str:
        return self.cluster.address


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    local = LocalCluster()
    yield local
    ray.shutdown()
    local.cluster.shutdown()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_trials_on_both_nodes_and_a_node_lost_mid_trial(ray_cluster, tmp_path: Path,
                                                       demo_model: Path) -> None:
    import ray

    from autotune.cluster import connect
    from autotune.results import configuration_key
    from autotune.space import load_space
    from autotune.study import run_study

    ray_cluster.ensure_two()
    ray.init(address=ray_cluster.address, ignore_reinit_error=True, log_to_driver=False)
    space = load_space(write_space(tmp_path, small_space(tmp_path, demo_model)))
    runner = connect(space, ray_cluster.address, tmp_path / "logs" / "ray")
    assert runner.pool.slots == 2 and runner.pool.capacity == 1
    assert "2 node(s), 2 CPU engine slot(s)" in runner.pool.describe()
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    killed: list[str] = []

    def kill_the_third_trial() -> None:
        # The third trial starts when the first finishes: kill its node once its engine runs.
        _wait(lambda: 2 in runner.running_on, 400, "trial 2 to start")
        node = runner.running_on[2]
        _wait(lambda: any((tmp_path / "logs" / "ray").glob("trial-0002.log"))
              and "APIServer" in (tmp_path / "logs" / "ray" / "trial-0002.log").read_text(),
              200, "trial 2's engine")
        killed.append(node)
        ray_cluster.remove(node)

    killer = threading.Thread(target=kill_the_third_trial, daemon=True)
    killer.start()
    result = run_study(space, url, name="ray", trials=3, parallel=2, trial_runner=runner,
                       confirm_stage=False)
    killer.join(timeout=5)
    assert killed, "the node of trial 2 was never killed"
    trials = result.report.trials
    assert [t.state for t in trials] == ["complete"] * 3, [t.failure_reason for t in trials]
    assert result.run.peak_parallel == 2
    first_two = {runner.ran_on[0][0], runner.ran_on[1][0]}
    assert len(first_two) == 2  # one trial on each node
    assert runner.ran_on[2][0] == killed[0] and runner.ran_on[2][1] != killed[0]
    lost = trials[2]
    assert "attempt 1: Ray node" in (lost.failure_reason or "")
    assert "ran again on a live node" in (lost.failure_reason or "")
    # no configuration measured twice: three trials, three configurations (the study's own
    # identity: the default trial is vLLM's defaults, whatever its listed values)
    assert len({configuration_key(t) for t in trials}) == 3
    assert all("on Ray node" in t.devices for t in trials)
    _wait(lambda: engine_processes() == [], 60, "the lost node's engine to die")


def test_a_trial_no_node_can_hold_is_rejected_before_launch(ray_cluster, tmp_path: Path,
                                                            demo_model: Path) -> None:
    import ray

    from autotune.cluster import connect
    from autotune.space import load_space

    ray_cluster.ensure_two()
    ray.init(address=ray_cluster.address, ignore_reinit_error=True, log_to_driver=False)
    data = small_space(tmp_path, demo_model)
    data["engine"]["flags"]["tensor_parallel_size"] = 2
    space = load_space(write_space(tmp_path, data))
    runner = connect(space, ray_cluster.address, tmp_path / "logs")
    outcome = runner.run(0, space.default_params(), is_default=True)
    assert outcome.state == "rejected"
    assert outcome.failure is not None and outcome.failure.kind == "invalid_config"
    assert ("it needs 2 autotune_cpu_slot resource(s) on one node (tensor parallel x pipeline "
            "parallel); the largest node of the Ray cluster has 1 (nodes: 1, 1)"
            in outcome.failure.reason)
    assert not (tmp_path / "logs").exists()


def test_controller_killed_leaves_no_engine_and_the_study_resumes(ray_cluster, tmp_path: Path,
                                                                 demo_model: Path) -> None:
    ray_cluster.ensure_two()
    space = write_space(tmp_path, small_space(tmp_path, demo_model))
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "autotune.cli", "study", "start", "--space", str(space),
               "--storage", url, "--name", "kill", "--trials", "1", "--log-dir", str(logs),
               "--executor", "ray", "--ray-address", ray_cluster.address]
    controller = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
    log = logs / "kill" / "trial-0000.log"
    _wait(lambda: log.exists() and "APIServer" in log.read_text(), 240, "the engine to start")
    assert engine_processes()
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    _wait(lambda: engine_processes() == [], 90, "the engines to die with their controller")

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "on Ray cluster" in again.stdout
    shown = subprocess.run([sys.executable, "-m", "autotune.cli", "study", "show", "kill",
                            "--storage", url, "--format", "json"],
                           capture_output=True, text=True, check=True)
    trials = json.loads(shown.stdout)["trials"]
    states = [t["state"] for t in trials]
    # the trial cut short (the default trial) is queued again and measured on resume: one
    # trial of budget, one engine start each time
    assert states == ["interrupted", "complete"], states
    assert trials[1]["is_default"], trials
    assert engine_processes() == []

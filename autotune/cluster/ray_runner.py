"""The trial runner of ``--executor ray``: each trial a Ray task on a node with the devices it
needs; the study (proposer, store, heartbeats) stays in the controller.

On the node the task builds the ordinary ``TrialRunner`` over the devices Ray assigned it (the
GPUs of ``ray.get_gpu_ids()`` as an NVML pool, whose release waits for their memory to be
free; on a CPU node the cores that ``AUTOTUNE_DEVICES`` names, or all of them), starts the
engine under its guard, measures and tears down. The task streams back where it runs, its
phases and then the ``TrialOutcome`` with the tail of the engine's log; the controller writes
that tail where the log would be when the node's disk is not its own, and records the node.

Faults. A node (or its worker) lost mid-trial ends that attempt as ``worker_lost``; the trial
runs once more, on a live node, and counts once: a lost attempt measured nothing. Ray does not
retry the task itself (``max_retries=0``), so no configuration is measured twice. A controller
killed even with SIGKILL takes its tasks with it (Ray's owner fate sharing kills their
workers), and each engine's guard kills the engine when its worker dies. Ctrl-C cancels the
running tasks the same way.

Ray is imported inside the functions: the module loads without it, and ``connect`` raises
``RayMissingError`` when it is missing.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from autotune.cluster.resources import (
    NODE_DEVICES_ENV,
    ClusterDevices,
    NodeResources,
    RayMissingError,
    resource_kind,
)
from autotune.devices import DevicePool, NoDevicesError
from autotune.engines import EngineLauncher, create
from autotune.engines.failures import EngineFailure
from autotune.errors import AutotuneError
from autotune.quality import Reference
from autotune.space import Space
from autotune.trial import PhaseCallback, TrialOutcome, TrialRunner
from autotune.trial_state import FailureKind

__all__ = ["NODE_ATTEMPTS", "TAIL_LINES", "RayTrialRunner", "WorkerLost", "connect",
           "live_nodes"]

NODE_ATTEMPTS = 2  # a trial whose node is lost runs once more, on a live node
TAIL_LINES = 400  # the engine log's last lines that come back with the outcome
POLL_S = 0.5


class WorkerLost(Exception):
    """The node or worker running a trial's attempt is gone."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError() from None
    return ray


def live_nodes() -> list[NodeResources]:
    """The cluster's live nodes, as Ray lists them now."""
    ray = _ray()
    return [NodeResources(n["NodeID"], n["NodeManagerAddress"], dict(n["Resources"]))
            for n in ray.nodes() if n["Alive"]]


def connect(space: Space, address: str | None, log_dir: Path) -> RayTrialRunner:
    """A runner for ``space`` on the Ray cluster at ``address`` (None: ``RAY_ADDRESS``, else
    the cluster started on this machine), engine logs under ``log_dir`` (absolute: the nodes
    write there). Raises ``RayMissingError`` without Ray, ``AutotuneError`` when no cluster
    answers or no node offers what the space's trials need."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto", log_to_driver=False,
                     logging_level="warning")
        except ConnectionError as exc:
            raise AutotuneError(f"no Ray cluster at {address or 'auto'}: {exc} (start one "
                                "with `ray start --head`, or pass --ray-address)") from None
    nodes = live_nodes()
    kind = resource_kind(space.engine.devices, nodes)
    shown = address or ray.get_runtime_context().gcs_address
    devices = ClusterDevices(nodes, kind, shown)
    if devices.slots == 0:
        hint = ("nodes with GPUs" if kind == "gpu" else
                f"CPU nodes started with `ray start --resources '{{\"{devices.resource}\": 1}}'`")
        raise AutotuneError(f"the Ray cluster at {shown} has no {devices.resource} resource: "
                            f"add {hint}")
    return RayTrialRunner(space, devices, log_dir.resolve())


class RayTrialRunner(TrialRunner):
    """A ``TrialRunner`` whose trials run as Ray tasks. Its ``pool`` is the cluster
    (``ClusterDevices``); ``measuring`` carries the study's front and quality probe to the
    nodes (a snapshot of the front for the load ladder's early stop, the study's quality
    reference); ``running_on`` maps each running trial to its node, ``ran_on`` each trial to
    the nodes of its attempts."""

    def __init__(self, space: Space, devices: ClusterDevices, log_dir: Path, *,
                 launcher: EngineLauncher | None = None) -> None:
        super().__init__(space, launcher or create(space.engine.kind),
                         cast(DevicePool, devices), log_dir)
        self.cluster = devices
        self.running_on: dict[int, str] = {}
        self.ran_on: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self._remote: Any = None

    def fresh(self, log_dir: Path) -> RayTrialRunner:
        """A runner on the same cluster for the confirm stage's fresh servers (each a Ray task
        too), with its own log folder and its own record of where its trials ran."""
        runner = cast(RayTrialRunner, super().fresh(log_dir.resolve()))
        runner.running_on, runner.ran_on = {}, {}
        runner._lock = threading.Lock()
        return runner

    def run(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        is_default: bool,
        on_phase: PhaseCallback = lambda _: None,
    ) -> TrialOutcome:
        config, outcome = self.planned(params, is_default=is_default)
        needed = self.launcher.devices_needed(config)
        self.cluster.refresh(live_nodes())
        misfit = self.cluster.misfit(needed)
        if misfit:
            outcome.state = "rejected"
            outcome.failure = EngineFailure(FailureKind.INVALID_CONFIG,
                                            f"rejected before launch: {misfit}")
            return outcome
        front = self.measuring.front
        snapshot = [list(v) for v in front()] if front is not None else None
        reference = self._reference(is_default, on_phase)
        lost: list[str] = []
        for attempt in range(1, NODE_ATTEMPTS + 1):
            if self.stop_event.is_set():
                return _interrupted(outcome)
            try:
                found = self._on_node(number, params, is_default, needed, snapshot, reference,
                                      on_phase)
            except WorkerLost as exc:
                lost.append(f"attempt {attempt}: {exc}")
                self.cluster.refresh(live_nodes())
                misfit = self.cluster.misfit(needed)
                if attempt < NODE_ATTEMPTS and not misfit and not self.stop_event.is_set():
                    on_phase("node lost; running the trial again")
                    continue
                if self.stop_event.is_set():
                    return _interrupted(outcome)
                outcome.state = "failed"
                outcome.failure = EngineFailure(
                    FailureKind.WORKER_LOST,
                    "; ".join(lost) + (f"; no retry: {misfit}" if misfit else ""))
                return outcome
            found.notes[:0] = [f"{what}; the trial ran again on a live node" for what in lost]
            return found
        raise AssertionError("unreachable")

    def _reference(self, is_default: bool, on_phase: PhaseCallback) -> Reference | None:
        """The study's quality reference for a trial that is not the default one: the
        controller's, or the store's (waiting, as the probe would, while the default trial that
        records it still runs)."""
        probe = self.quality
        if probe is None or is_default:
            return None
        deadline = None
        while probe.reference is None and probe.source is not None:
            found, pending = probe.source()
            if found is not None:
                probe.reference = found
                break
            if deadline is None:
                deadline = time.monotonic() + probe.spec.reference_wait_s
                on_phase("waiting for the default trial's quality reference")
            if not pending or self.stop_event.wait(POLL_S) or _past(deadline):
                break
        return probe.reference

    def _on_node(self, number: int, params: Mapping[str, Any], is_default: bool, needed: int,
                 front: list[list[float]] | None, reference: Reference | None,
                 on_phase: PhaseCallback) -> TrialOutcome:
        """One attempt as a Ray task; raises ``WorkerLost`` when its node or worker dies."""
        ray = _ray()
        if self._remote is None:
            self._remote = ray.remote(_trial_on_node)
        on_phase("waiting for a Ray node")
        task = self._remote.options(**self.cluster.request(needed), max_retries=0,
                                    num_returns="streaming", name=f"autotune-trial-{number}")
        stream = task.remote(self.space, number, dict(params), is_default, str(self.log_dir),
                             front, reference, self.quality is not None, self.cluster.kind,
                             self.launcher)
        where: dict[str, str] = {}
        try:
            while True:
                ready, _ = ray.wait([stream], timeout=POLL_S)
                if self.stop_event.is_set():
                    ray.cancel(stream, force=True)  # the worker dies; the guard kills the engine
                    return _interrupted(TrialOutcome(state="running"))
                if not ready:
                    continue
                try:
                    item = ray.get(next(stream))
                except StopIteration:
                    raise WorkerLost(f"the task on {_node(where)} ended without an "
                                     "outcome") from None
                if item[0] == "node":
                    where = item[1]
                    with self._lock:
                        self.running_on[number] = where["node_id"]
                        self.ran_on.setdefault(number, []).append(where["node_id"])
                    on_phase(f"on {where['host']} ({where['ip']})")
                elif item[0] == "phase":
                    on_phase(item[1])
                else:
                    return self._arrived(item[1], item[2], item[3], where)
        except ray.exceptions.RayTaskError:
            raise  # autotune's own error on the node: not a lost node
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"{_node(where)} lost ({type(exc).__name__})") from exc
        finally:
            with self._lock:
                self.running_on.pop(number, None)

    def _arrived(self, outcome: TrialOutcome, tail: str, found: Mapping[str, Any],
                 where: Mapping[str, str]) -> TrialOutcome:
        """The outcome back from its node: where it ran, the log's tail kept here when the
        node's log is not on this machine's disk, stuck GPUs noted."""
        node = where.get("node_id", "")
        outcome.devices = f"{outcome.devices} on {_node(where)}"
        if outcome.log_path:
            outcome.notes.append(f"ran on {_node(where)}; its engine log there: "
                                 f"{where.get('host')}:{outcome.log_path}")
            path = Path(outcome.log_path)
            if tail and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"# the last {TAIL_LINES} lines of the engine log "
                                f"{outcome.log_path} on {_node(where)}\n{tail}")
        stuck = list(found.get("stuck", []))
        if stuck:
            self.cluster.note_stuck(node, stuck)
            outcome.notes.append(f"GPUs {stuck} of {_node(where)} never released their "
                                 "memory after this trial")
        probe = self.quality
        if outcome.quality_reference is not None and probe is not None:
            probe.reference = outcome.quality_reference
        return outcome


def _past(deadline: float) -> bool:
    return time.monotonic() > deadline


def _node(where: Mapping[str, str]) -> str:
    if not where:
        return "its node"
    return f"Ray node {where['node_id'][:12]} ({where['host']}, {where['ip']})"


def _interrupted(outcome: TrialOutcome) -> TrialOutcome:
    outcome.state = "failed"
    outcome.failure = EngineFailure(FailureKind.INTERRUPTED, "study stopped")
    return outcome


def _node_pool(space: Space, kind: str, gpu_ids: Sequence[object]) -> DevicePool:
    """The devices of this task on its node: the GPUs Ray assigned, or the CPU cores
    ``AUTOTUNE_DEVICES`` names (all of them when unset)."""
    from autotune.study.entrypoint import device_pool

    if kind == "gpu":
        return device_pool(space, "gpu:" + ",".join(str(g) for g in gpu_ids), parallel=None)
    return device_pool(space, os.environ.get(NODE_DEVICES_ENV) or "cpu", parallel=1)


def _tail(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-TAIL_LINES:]) + "\n"


def _trial_on_node(space: Space, number: int, params: dict[str, Any], is_default: bool,
                   log_dir: str, front: list[list[float]] | None, reference: Reference | None,
                   quality: bool, kind: str, launcher: EngineLauncher) -> Any:
    """The Ray task of one attempt (a streaming generator): ``("node", where)``, then
    ``("phase", text)`` as the trial goes, then ``("outcome", outcome, log tail, found)``.
    ``quality`` False: no quality probe (the controller's step has none: the confirm stage).
    ``launcher``: the controller's (``create(space.engine.kind)`` unless the runner was given
    one), sent with the task."""
    import ray

    context = ray.get_runtime_context()
    yield ("node", {"node_id": context.get_node_id(), "ip": ray.util.get_node_ip_address(),
                    "host": socket.gethostname()})
    # Ray sets OMP_NUM_THREADS to the task's CPUs (none asked: 1); the engine sizes its own
    # threads to its devices (engine.env may set it).
    os.environ.pop("OMP_NUM_THREADS", None)
    outcome = TrialOutcome(state="running")
    try:
        pool = _node_pool(space, kind, ray.get_gpu_ids())
    except (NoDevicesError, ValueError) as exc:
        outcome.state = "failed"
        outcome.failure = EngineFailure(FailureKind.HOST_FAULT, f"no devices on the node: {exc}")
        yield ("outcome", outcome, "", {})
        return
    runner = TrialRunner(space, launcher, pool, Path(log_dir))
    runner.measuring.front = (lambda: front) if front is not None else None
    if not quality:
        runner.measuring.quality = None
    elif runner.quality is not None:
        runner.quality.reference = reference
    phases: queue.Queue[str | None] = queue.Queue()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["outcome"] = runner.run(number, params, is_default=is_default,
                                        on_phase=phases.put)
        except BaseException as exc:  # noqa: BLE001 - raised below, in the task
            box["error"] = exc
        finally:
            phases.put(None)

    thread = threading.Thread(target=work, name=f"trial-{number}", daemon=True)
    thread.start()
    while (phase := phases.get()) is not None:
        yield ("phase", phase)
    thread.join()
    if "error" in box:
        raise box["error"]
    outcome = box["outcome"]
    yield ("outcome", outcome, _tail(outcome.log_path),
           {"stuck": pool.stuck(), "suspects": pool.suspects()})

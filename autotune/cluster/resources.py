"""The controller's view of a Ray cluster's devices, without Ray: what a trial asks Ray for, how
many trials fit at once, and which trial no node can hold.

A trial on GPU nodes asks for ``num_gpus`` = tensor parallel × pipeline parallel (the
launcher's ``devices_needed``) on one node; on CPU nodes it asks for that many
``autotune_cpu_slot`` resources (a node offers as many as engines it may run at once, usually
one: ``ray start --resources '{"autotune_cpu_slot": 1}'``). Ray packs trials of different sizes
by these resources and never oversubscribes them; a trial larger than every node is refused
before launch with the numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autotune.devices import DeviceKind, DeviceSet, NoDevicesError
from autotune.errors import AutotuneError

__all__ = ["CPU_SLOT", "NODE_DEVICES_ENV", "ClusterDevices", "NodeResources", "RayMissingError",
           "resource_kind"]

CPU_SLOT = "autotune_cpu_slot"  # the custom resource of an engine slot on a CPU node
# Set on a node (in the raylet's environment) to name the devices its trials use, as
# ``--devices`` does (``cpu:0-15``, ``gpu``): two CPU nodes sharing one host get disjoint cores.
NODE_DEVICES_ENV = "AUTOTUNE_DEVICES"


class RayMissingError(AutotuneError):
    """``--executor ray`` without Ray installed."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__("--executor ray needs Ray on this machine and on the cluster's nodes: "
                         "pip install 'autotune[ray]'")


@dataclass(frozen=True)
class NodeResources:
    """One live node of the cluster: its id, address and resources (Ray's names)."""

    node_id: str
    address: str
    resources: Mapping[str, float] = field(default_factory=dict)


def resource_kind(engine_devices: str, nodes: Sequence[NodeResources]) -> DeviceKind:
    """``gpu`` or ``cpu``: the space's ``engine.devices``, ``auto`` meaning GPUs when a node
    has any."""
    if engine_devices in ("cpu", "gpu"):
        return engine_devices  # type: ignore[return-value]
    return "gpu" if any(n.resources.get("GPU", 0) >= 1 for n in nodes) else "cpu"


class ClusterDevices:
    """The devices of a Ray cluster, seen from the controller: a ``DevicePool`` by shape, so the
    study describes and sizes it as any pool, but devices are acquired by Ray on the nodes, never
    here. ``refresh`` takes the live nodes again (a node died, one joined)."""

    def __init__(self, nodes: Sequence[NodeResources], kind: DeviceKind, address: str) -> None:
        self.kind: DeviceKind = kind
        self.address = address
        self.resource = "GPU" if kind == "gpu" else CPU_SLOT
        self._lock = threading.Lock()
        self._nodes = list(nodes)
        self._stuck: dict[str, list[int]] = {}  # node id → GPUs whose memory never freed
        self._suspects: dict[int, str] = {}

    def refresh(self, nodes: Sequence[NodeResources]) -> None:
        with self._lock:
            self._nodes = list(nodes)

    @property
    def nodes(self) -> list[NodeResources]:
        with self._lock:
            return list(self._nodes)

    def per_node(self) -> list[int]:
        """Each live node's devices of this kind (nodes without any left out)."""
        counts = [int(n.resources.get(self.resource, 0)) for n in self.nodes]
        return [c for c in counts if c > 0]

    @property
    def capacity(self) -> int:
        """The most devices one trial may get: the largest node's."""
        return max(self.per_node(), default=0)

    @property
    def slots(self) -> int:
        """Single-device trials the cluster runs at once."""
        return sum(self.per_node())

    def request(self, n: int) -> dict[str, object]:
        """Ray's task options for a trial of ``n`` devices."""
        if self.kind == "gpu":
            return {"num_cpus": 0, "num_gpus": n}
        return {"num_cpus": 0, "resources": {CPU_SLOT: n}}

    def misfit(self, n: int) -> str | None:
        """Why a trial of ``n`` devices fits no live node; None when one can hold it."""
        counts = self.per_node()
        what = "GPU(s)" if self.kind == "gpu" else f"{CPU_SLOT} resource(s)"
        if not counts:
            return f"it needs {n} {what} on one node; no live node of the Ray cluster has any"
        if n <= max(counts):
            return None
        shown = ", ".join(str(c) for c in sorted(counts, reverse=True))
        return (f"it needs {n} {what} on one node (tensor parallel x pipeline parallel); the "
                f"largest node of the Ray cluster has {max(counts)} (nodes: {shown})")

    def describe(self) -> str:
        counts = self.per_node()
        if self.kind == "gpu":
            what = f"{sum(counts)} GPU(s) ({'+'.join(str(c) for c in counts)})"
        else:
            what = f"{sum(counts)} CPU engine slot(s)"
        return f"Ray cluster {self.address}: {len(counts)} node(s), {what}"

    def inventory(self) -> list[dict[str, object]]:
        return [{"node": n.node_id, "address": n.address,
                 self.resource: n.resources.get(self.resource, 0)} for n in self.nodes]

    def acquire(self, n: int) -> DeviceSet:
        raise NoDevicesError("a Ray cluster's devices are acquired by Ray on its nodes, not by "
                             "the controller")

    def release(self, devices: DeviceSet) -> None:
        raise NoDevicesError("a Ray cluster's devices are released on its nodes")

    def note_stuck(self, node_id: str, gpus: Sequence[int]) -> None:
        """GPUs of ``node_id`` whose memory was never released after a trial there."""
        if gpus:
            with self._lock:
                known = self._stuck.setdefault(node_id, [])
                known.extend(g for g in gpus if g not in known)

    def stuck_on_nodes(self) -> dict[str, list[int]]:
        with self._lock:
            return {k: sorted(v) for k, v in self._stuck.items()}

    def stuck(self) -> list[int]:
        """GPU indices reported stuck on any node (``stuck_on_nodes`` says which)."""
        return sorted({g for gpus in self.stuck_on_nodes().values() for g in gpus})

    def mark_suspect(self, devices: DeviceSet, reason: str) -> None:
        with self._lock:
            self._suspects.update(dict.fromkeys(devices.ids, reason))

    def suspects(self) -> dict[int, str]:
        with self._lock:
            return dict(self._suspects)
